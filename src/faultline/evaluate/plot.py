"""One PNG per series: the values, the labelled windows, the unscored warm-up and detections."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_series(
    path: Path,
    title: str,
    values: np.ndarray,
    windows: Sequence[tuple[int, int]],
    detected: np.ndarray,
    unscored: int = 0,
) -> None:
    """Rows on the x axis (as NAB scores them); windows green, warm-up grey, detections red."""
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    ax = fig.subplots()
    rows = np.arange(len(values))
    ax.plot(rows, values, lw=0.6, color="#1f4e79")
    if unscored:
        ax.axvspan(0, unscored, color="0.85", label="not scored")
    for i, (a, b) in enumerate(windows):
        ax.axvspan(a, b, color="#2ca02c", alpha=0.25, label="labelled window" if i == 0 else None)
    hits = np.flatnonzero(detected)
    if len(hits):
        ax.scatter(hits, values[hits], s=14, color="#d62728", zorder=3, label="detection")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("row")
    ax.set_xlim(0, max(len(values) - 1, 1))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
