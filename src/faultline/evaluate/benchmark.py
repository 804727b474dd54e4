"""A detector over the NAB corpus: replay, score, and NAB's results layout on disk."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faultline.detect.base import Scores
from faultline.evaluate.detectors import EvalDetector
from faultline.evaluate.nab import PROFILES, NabCorpus, NabFile, ProfileResult, probation_length
from faultline.evaluate.nab import score_corpus as nab_score
from faultline.evaluate.replay import Series, replay, unit_interval

SENSOR = "value"


@dataclass(frozen=True)
class NabRun:
    detector: str
    anomaly_scores: dict[str, np.ndarray]  # per file, in [0, 1], what NAB thresholds
    results: dict[str, ProfileResult]
    seconds: float  # replay time
    readings: int

    def summary(self) -> dict[str, float]:
        """The normalised score per profile: `faultline eval nab --json`."""
        return {name: round(self.results[name].score, 4) for name in PROFILES}


def as_series(f: NabFile) -> Series:
    return Series(f.name, f.ts_ms(), pd.DataFrame({SENSOR: f.values}))


def run_nab(corpus: NabCorpus, spec: EvalDetector) -> NabRun:
    """Replay every file through a fresh detector, then score the corpus.

    A streaming detector sees all files at once, each as its own station. A detector with an
    offline model gets one model per file, fitted on that file's probationary rows (which NAB
    never scores), and sees that file alone.
    """
    start = time.perf_counter()
    series = [as_series(f) for f in corpus.files]
    scored: list[Scores]
    if spec.needs_training:
        scored = []
        for f, s in zip(corpus.files, series, strict=True):
            training = s.values.iloc[: probation_length(f.rows)]
            scored.extend(replay(spec.build([SENSOR], training), [s]))
    else:
        scored = replay(spec.build([SENSOR], series[0].values.iloc[:0]), series)
    seconds = time.perf_counter() - start
    anomaly = {f.name: unit_interval(s.score) for f, s in zip(corpus.files, scored, strict=True)}
    return NabRun(
        detector=spec.name,
        anomaly_scores=anomaly,
        results=nab_score(corpus, anomaly),
        seconds=seconds,
        readings=sum(f.rows for f in corpus.files),
    )


def write_results(run: NabRun, corpus: NabCorpus, out: Path, plots: bool = True) -> None:
    """NAB's layout: `<out>/<category>/<detector>_<file>.csv` with a PNG beside each, and
    `<out>/<detector>_summary.json` with every profile's threshold and per-file raw scores."""
    from faultline.evaluate.plot import plot_series  # matplotlib only when plots are written

    standard = run.results["standard"]
    for f in corpus.files:
        category, _, base = f.name.rpartition("/")
        stem = out / category / f"{run.detector}_{Path(base).stem}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        scores = run.anomaly_scores[f.name]
        pd.DataFrame(
            {
                "timestamp": f.timestamps,
                "value": f.values,
                "anomaly_score": scores,
                "label": f.window_mask().astype(int),
            }
        ).to_csv(stem.with_suffix(".csv"), index=False)
        if plots:
            detected = scores >= standard.threshold
            detected[: probation_length(f.rows)] = False
            plot_series(
                stem.with_suffix(".png"),
                f"{f.name} — {run.detector}, standard threshold {standard.threshold:.4g}",
                f.values,
                f.windows,
                detected,
                unscored=probation_length(f.rows),
            )
    (out / f"{run.detector}_summary.json").write_text(json.dumps(summary_document(run), indent=2))


def summary_document(run: NabRun) -> dict[str, Any]:
    return {
        "detector": run.detector,
        "scores": run.summary(),
        "profiles": {
            name: {
                "score": r.score,
                "threshold": r.threshold,
                "raw": r.raw,
                "null_raw": r.null_raw,
                "perfect_raw": r.perfect_raw,
                "files": {
                    fs.name: {
                        "raw": fs.raw,
                        "windows_detected": fs.detected_windows,
                        "windows_missed": fs.missed_windows,
                        "false_positives": fs.false_positives,
                    }
                    for fs in r.files
                },
            }
            for name, r in run.results.items()
        },
    }
