"""Replaying labelled series through a detector exactly as the stream would deliver them.

Each series becomes one station in frames of the `faultline.schema` layout, and the frames go
through `Detector.process`, which scores every reading against the state built from the readings
before it and only then learns it. Several series are replayed together as several stations,
interleaved by row position, so each `process` round holds one reading of every series still
running: the same vectorisation across stations the engine relies on. That is only sound for
detectors whose state is per station, which is what the Detector protocol asks for.

For NAB, a score per row must lie in [0, 1]. `unit_interval` maps a detector's score (any scale,
higher = more anomalous, NaN = no verdict) with x ↦ x / (1 + x) after clipping negatives to 0, and
no verdict to 0. The map is strictly increasing on [0, ∞) and the same for every series, so NAB's
corpus-wide threshold sweep ranks readings exactly as the detector does; only scores below 0,
which no detector here emits for an anomaly, are merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from faultline.detect.base import Detector, Scores
from faultline.schema import READING_COLUMNS, RECEIVED_AT, SEQ, STATION_ID, TS, TS_ASSIGNED

CHUNK_ROWS = 65_536  # an engine-sized batch: bounds memory, does not change any score


@dataclass(frozen=True)
class Series:
    """One station's readings: epoch-ms times and one column per sensor, in time order."""

    name: str
    ts_ms: np.ndarray
    values: pd.DataFrame

    def __post_init__(self) -> None:
        if len(self.ts_ms) != len(self.values):
            raise ValueError(f"{self.name}: {len(self.ts_ms)} times for {len(self.values)} rows")

    def __len__(self) -> int:
        return len(self.values)

    def head(self, rows: int) -> Series:
        return Series(self.name, self.ts_ms[:rows], self.values.iloc[:rows])

    def tail(self, start: int) -> Series:
        return Series(self.name, self.ts_ms[start:], self.values.iloc[start:])


def readings_frame(series: Sequence[Series], sensors: Sequence[str]) -> pd.DataFrame:
    """One frame holding every series as its own station, ordered by (row position, series)."""
    for s in series:
        unknown = set(s.values.columns) - set(sensors)
        if unknown:
            raise ValueError(f"{s.name}: columns {sorted(unknown)} are not detector sensors")
    lengths = np.array([len(s) for s in series], np.int64)
    position = np.concatenate([np.arange(n) for n in lengths]) if len(series) else np.empty(0)
    which = np.repeat(np.arange(len(series)), lengths)
    order = np.lexsort((which, position))
    ts = np.concatenate([np.asarray(s.ts_ms, np.int64) for s in series]) if series else position
    frame = pd.DataFrame(
        {
            STATION_ID: np.array([s.name for s in series], dtype=object)[which][order],
            TS: ts[order],
            SEQ: position[order].astype(np.int64),
            TS_ASSIGNED: np.zeros(len(order), bool),
            RECEIVED_AT: ts[order],
        },
        columns=list(READING_COLUMNS),
    )
    for name in sensors:
        column = (
            np.concatenate(
                [
                    s.values[name].to_numpy(np.float64)
                    if name in s.values
                    else np.full(len(s), np.nan)
                    for s in series
                ]
            )
            if series
            else np.empty(0)
        )
        frame[name] = column[order]
    return frame


def replay(
    detector: Detector, series: Sequence[Series], chunk_rows: int = CHUNK_ROWS
) -> list[Scores]:
    """Every reading of every series scored using only the readings before it; one per series."""
    if len({s.name for s in series}) != len(series):
        raise ValueError("series names must be unique: each one is a station")
    frame = readings_frame(series, detector.sensors)
    n = len(frame)
    score = np.full(n, np.nan)
    anomaly = np.zeros(n, bool)
    mask = np.zeros(n, np.int64)
    # A chunk may end mid-round; each station's readings still arrive in order.
    for start in range(0, n, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n))
        got = detector.process(frame.iloc[rows])
        score[rows], anomaly[rows], mask[rows] = got.score, got.is_anomaly, got.sensor_mask
    # Undo the interleaving: frame row k is row SEQ of station STATION_ID.
    names = frame[STATION_ID].to_numpy()
    seq = frame[SEQ].to_numpy()
    out = []
    for s in series:
        mine = np.flatnonzero(names == s.name)
        back = mine[np.argsort(seq[mine], kind="stable")]
        out.append(Scores(score[back], anomaly[back], mask[back]))
    return out


def replay_after_training(
    detector: Detector, series: Sequence[Series], train_rows: int
) -> list[Scores]:
    """Replay the first `train_rows` of each series unscored, then score the rest.

    The detector learns the training rows in stream order, so its streaming state is warm when
    scoring starts (a detector with an offline model was fitted on them when it was built).
    """
    if train_rows < 0:
        raise ValueError(f"train_rows must be >= 0, got {train_rows}")
    heads = [h for h in (s.head(train_rows) for s in series) if len(h)]
    if heads:
        replay(detector, heads)
    return replay(detector, [s.tail(train_rows) for s in series])


def unit_interval(score: np.ndarray) -> np.ndarray:
    """A detector's scores mapped into [0, 1] for NAB (see the module docstring)."""
    x = np.clip(np.nan_to_num(np.asarray(score, np.float64), nan=0.0), 0.0, None)
    with np.errstate(invalid="ignore"):
        out = x / (1.0 + x)
    return np.where(np.isinf(x), 1.0, out)
