"""Point-wise and event-wise detection metrics over labelled rows, pooled across files.

An *event* is a maximal run of consecutive labelled rows (or of flagged rows) within one file.
A labelled event is detected when at least one of its rows is flagged; a flagged event is a true
alarm when at least one of its rows is labelled. Event precision and recall come from those
counts, summed over files. The false-alarm rate is the share of normal rows flagged and the
missed-alarm rate the share of anomalous rows not flagged. A rate whose denominator is empty is
None (undefined), never a made-up 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    events: int = 0  # labelled events
    events_found: int = 0
    alarms: int = 0  # flagged events
    alarms_true: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Classification:
    """The summary `faultline eval csv` prints; keys match its `--json` output."""

    f1_point: float | None
    f1_event: float | None
    far: float | None
    mar: float | None
    counts: Counts

    @property
    def detection_rate(self) -> float | None:
        """The share of anomalous rows flagged (point-wise recall; TEP's FDR)."""
        return None if self.mar is None else 1.0 - self.mar

    def as_json(self) -> dict[str, float | None]:
        return {
            "f1_point": self.f1_point,
            "f1_event": self.f1_event,
            "far": self.far,
            "mar": self.mar,
            "detection_rate": self.detection_rate,
        }


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (start, end) row pairs."""
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def count(labels: np.ndarray, flagged: np.ndarray) -> Counts:
    """The counts of one file's scored rows."""
    labels = np.asarray(labels, bool)
    flagged = np.asarray(flagged, bool)
    if labels.shape != flagged.shape:
        raise ValueError(f"{len(labels)} labels for {len(flagged)} verdicts")
    events = runs(labels)
    alarms = runs(flagged)
    return Counts(
        tp=int((labels & flagged).sum()),
        fp=int((~labels & flagged).sum()),
        fn=int((labels & ~flagged).sum()),
        tn=int((~labels & ~flagged).sum()),
        events=len(events),
        events_found=sum(bool(flagged[a : b + 1].any()) for a, b in events),
        alarms=len(alarms),
        alarms_true=sum(bool(labels[a : b + 1].any()) for a, b in alarms),
    )


def classify(labels: Sequence[np.ndarray], flagged: Sequence[np.ndarray]) -> Classification:
    """Metrics over the rows of all files together (not an average of per-file metrics)."""
    total = sum((count(lab, flg) for lab, flg in zip(labels, flagged, strict=True)), Counts())
    point_precision = _ratio(total.tp, total.tp + total.fp)
    point_recall = _ratio(total.tp, total.tp + total.fn)
    event_precision = _ratio(total.alarms_true, total.alarms)
    event_recall = _ratio(total.events_found, total.events)
    miss = _ratio(total.fn, total.tp + total.fn)
    return Classification(
        f1_point=_f1(point_precision, point_recall),
        f1_event=_f1(event_precision, event_recall),
        far=_ratio(total.fp, total.fp + total.tn),
        mar=miss,
        counts=total,
    )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    """Harmonic mean; a detector that flags nothing has precision undefined and F1 0."""
    if recall is None:
        return None
    precision = precision or 0.0
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
