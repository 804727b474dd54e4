"""Training seed 000's model on the plant's own stored readings.

The training set is a time range of the store, restricted to stations matching a glob, less
every reading the serving detectors flagged anomalous and every reading inside a labelled fault
interval: the forest should learn what this plant's normal looks like, not its faults. The new
version is registered under the challenger alias; only an explicit promotion (after the gate)
makes it serve.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from faultline.config import Settings
from faultline.models.base import ModelInfo
from faultline.schema import STATION_ID, TS
from faultline.store.base import FaultLabels, ReadingRow, StationReadings, Stations, Store

if TYPE_CHECKING:
    from faultline.models.registry import MlflowModelRegistry

PAGE = 5000
# Rows kept as the drift baseline: a few thousand pin each sensor's distribution down as well
# as all of them would, and keep the registered artifact small.
REFERENCE_ROWS = 5000
# Fewer clean readings than this cannot describe a plant's normal behaviour.
MIN_TRAINING_ROWS = 100


@dataclass(frozen=True, slots=True)
class StoredTrainingSet:
    """The clean readings of a window, and how many of the window's readings were left out."""

    frame: pd.DataFrame  # station_id, ts and one float column per sensor, by (station, ts)
    stations: tuple[str, ...]
    readings: int  # all the window's readings of those stations
    anomalous: int  # left out: flagged anomalous when they were scored
    in_faults: int  # left out: inside a labelled fault interval (and not already counted)
    incomplete: int  # left out: lacking one of the model's sensors


def stored_training_set(
    store: Store,
    sensors: Sequence[str],
    start_ms: int,
    end_ms: int,
    stations: str = "*",
    *,
    page: int = PAGE,
) -> StoredTrainingSet:
    """Readings with start_ms <= ts < end_ms of the stations whose id matches `stations`."""
    if not start_ms < end_ms:
        raise ValueError(f"the training window must end after it starts ({start_ms}, {end_ms})")
    chosen = tuple(
        s.station_id for s in store.query(Stations()) if fnmatch.fnmatchcase(s.station_id, stations)
    )
    parts: list[pd.DataFrame] = []
    counts = np.zeros(4, np.int64)  # readings, anomalous, in faults, incomplete
    for station in chosen:
        labels = store.query(FaultLabels(start_ms, end_ms, station_id=station))
        spans = np.array([(f.start_ts, f.end_ts) for f in labels], np.int64).reshape(-1, 2)
        after: tuple[int, int] | None = None
        while True:
            result = store.query(StationReadings(station, start_ms, end_ms, page, after))
            if result.rows:
                clean, page_counts = _clean(result.rows, sensors, spans)
                counts += page_counts
                parts.append(clean.assign(**{STATION_ID: station}))
            if result.next_cursor is None:
                break
            after = result.next_cursor
    columns = [STATION_ID, TS, *sensors]
    frame = (
        pd.concat(parts, ignore_index=True)[columns]
        if parts
        else pd.DataFrame(
            {c: pd.Series(dtype=object if c == STATION_ID else float) for c in columns}
        )
    )
    return StoredTrainingSet(frame, chosen, *(int(c) for c in counts))


def _clean(
    rows: Sequence[ReadingRow], sensors: Sequence[str], spans: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    ts = np.array([r.ts for r in rows], np.int64)
    values = np.array(
        [[r.values.get(s, np.nan) for s in sensors] for r in rows], np.float64
    ).reshape(len(rows), len(sensors))
    anomalous: np.ndarray = np.array([r.is_anomaly for r in rows], np.bool_)
    # A label covers [start_ts, end_ts], both ends included; a fault in one sensor makes the
    # whole reading (the forest's input row) abnormal.
    inside = (ts[:, None] >= spans[:, 0]) & (ts[:, None] <= spans[:, 1])
    in_fault = np.asarray(inside.any(axis=1), np.bool_)  # no labels: a (rows, 0) all-False
    incomplete = np.asarray(~np.isfinite(values).all(axis=1), np.bool_)
    keep = ~(anomalous | in_fault | incomplete)
    fault_only = in_fault & ~anomalous
    counts = np.array(
        [len(ts), anomalous.sum(), fault_only.sum(), (incomplete & ~(anomalous | in_fault)).sum()],
        np.int64,
    )
    clean = pd.DataFrame(values[keep], columns=list(sensors))
    clean.insert(0, TS, ts[keep])
    return clean, counts


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def train_on_store(
    settings: Settings,
    store: Store,
    registry: MlflowModelRegistry,
    start_ms: int,
    end_ms: int,
    stations: str = "*",
) -> ModelInfo:
    """Fit the configured model on the window's clean readings; register it as the challenger.

    Raises ValueError when the window holds too few clean readings to train on.
    """
    from faultline.models.isolation_forest import train_isolation_forest

    m = settings.model
    sensors = settings.sensor_names
    data = stored_training_set(store, sensors, start_ms, end_ms, stations)
    found = (
        f"{len(data.frame)} clean readings of {len(data.stations)} stations matching "
        f"{stations!r} between {_iso(start_ms)} and {_iso(end_ms)} ({data.readings} stored, "
        f"{data.anomalous} anomalous, {data.in_faults} in labelled faults, "
        f"{data.incomplete} incomplete)"
    )
    if len(data.frame) < MIN_TRAINING_ROWS:
        raise ValueError(f"too little to train on: {found}; at least {MIN_TRAINING_ROWS} needed")
    frame = data.frame
    if len(frame) > m.train_samples:
        frame = frame.sample(n=m.train_samples, random_state=m.seed)
    pipeline = train_isolation_forest(
        frame, sensors, n_estimators=m.n_estimators, contamination=m.contamination, seed=m.seed
    )
    reference = frame.sample(n=min(len(frame), REFERENCE_ROWS), random_state=m.seed)
    params = {
        "n_estimators": str(m.n_estimators),
        "contamination": str(m.contamination),
        "train_samples": str(m.train_samples),
        "seed": str(m.seed),
        "training_data": "stored readings, less anomalies and labelled faults",
        "train_from": _iso(start_ms),
        "train_to": _iso(end_ms),
        "train_stations": stations,
    }
    metrics = {
        "window_readings": float(data.readings),
        "excluded_anomalous": float(data.anomalous),
        "excluded_in_faults": float(data.in_faults),
        "excluded_incomplete": float(data.incomplete),
        "clean_readings": float(len(data.frame)),
        "training_rows": float(len(frame)),
        "stations": float(len(data.stations)),
    }
    return registry.register(
        pipeline,
        sensors,
        reference[list(sensors)],
        params,
        alias=m.challenger_alias,
        metrics=metrics,
    )
