"""WriteBatch frames in the faultline.schema layout, for store tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from faultline.alarm_schema import AlarmTransition
from faultline.schema import (
    IS_ANOMALY,
    MODEL_VERSION,
    RECEIVED_AT,
    SENSOR_MASK,
    SEQ,
    STATION_ID,
    TS,
    TS_ASSIGNED,
    DeadLetter,
    FaultLabel,
    GlobalAnomaly,
    GlobalAnomalyRun,
    WriteBatch,
    score_column,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SENSORS = ("temperature", "humidity", "noise_level")
DETECTORS = ("iforest", "robust")


def reading_frame(
    station_id: str | Sequence[str],
    ts: Sequence[int],
    *,
    seq: Sequence[int] | None = None,
    values: Sequence[Sequence[float]] | np.ndarray | None = None,
    is_anomaly: Sequence[bool] | None = None,
    sensor_mask: Sequence[int] | None = None,
    scores: Sequence[Sequence[float]] | np.ndarray | None = None,
    received_at: Sequence[int] | None = None,
    ts_assigned: Sequence[bool] | None = None,
    model_version: str = "model-1",
    sensors: Sequence[str] = SENSORS,
    detectors: Sequence[str] = DETECTORS,
) -> pd.DataFrame:
    """Scored readings; whatever is not given is derived from the row's position and ts.

    Defaults: seq = ts // 1000, values vary with the position, a reading is anomalous when its
    mask is non-zero, received_at = ts + 50.
    """
    ts_arr = np.asarray(ts, dtype=np.int64)
    n = len(ts_arr)
    stations = [station_id] * n if isinstance(station_id, str) else list(station_id)
    position = np.arange(n)
    if values is None:
        base = np.array([25.0, 60.0, 50.0, 1.0, 2.0, 3.0, 4.0])[: len(sensors)]
        values = base + (position % 17)[:, None] * 0.125
    if sensor_mask is None:
        flags = np.zeros(n, bool) if is_anomaly is None else np.asarray(is_anomaly, bool)
        sensor_mask = np.where(flags, 1, 0)
    mask = np.asarray(sensor_mask, dtype=np.int64)
    anomaly = mask != 0 if is_anomaly is None else np.asarray(is_anomaly, bool)
    if scores is None:
        scores = np.column_stack(
            [np.where(anomaly, 0.9, 0.1) + k for k in range(len(detectors))]
        ).reshape(n, len(detectors))
    frame = pd.DataFrame(
        {
            STATION_ID: pd.Series(stations, dtype=object),
            TS: ts_arr,
            SEQ: ts_arr // 1000 if seq is None else np.asarray(seq, dtype=np.int64),
            TS_ASSIGNED: np.zeros(n, bool) if ts_assigned is None else np.asarray(ts_assigned),
            RECEIVED_AT: ts_arr + 50 if received_at is None else np.asarray(received_at, np.int64),
        }
    )
    value_arr = np.asarray(values, dtype=np.float64).reshape(n, len(sensors))
    for j, name in enumerate(sensors):
        frame[name] = value_arr[:, j]
    frame[IS_ANOMALY] = anomaly
    frame[SENSOR_MASK] = mask
    frame[MODEL_VERSION] = model_version
    score_arr = np.asarray(scores, dtype=np.float64).reshape(n, len(detectors))
    for j, name in enumerate(detectors):
        frame[score_column(name)] = score_arr[:, j]
    return frame


def write_batch(
    readings: pd.DataFrame | None = None,
    *,
    dead_letters: Sequence[DeadLetter] = (),
    faults: Sequence[FaultLabel] = (),
    global_anomalies: Sequence[GlobalAnomaly] = (),
    global_anomaly_run: GlobalAnomalyRun | None = None,
    alarm_transitions: Sequence[AlarmTransition] = (),
    processed_at: int = T0 + 3_600_000,
    sensors: Sequence[str] = SENSORS,
    detectors: Sequence[str] = DETECTORS,
) -> WriteBatch:
    return WriteBatch(
        sensors=tuple(sensors),
        detectors=tuple(detectors),
        readings=reading_frame([], [], sensors=sensors, detectors=detectors)
        if readings is None
        else readings,
        processed_at=processed_at,
        dead_letters=tuple(dead_letters),
        faults=tuple(faults),
        global_anomalies=tuple(global_anomalies),
        global_anomaly_run=global_anomaly_run,
        alarm_transitions=tuple(alarm_transitions),
    )


def dead_letter(n: int, *, received_at: int | None = None) -> DeadLetter:
    return DeadLetter(
        payload=b"\x00not json " + str(n).encode(),
        reason=f"malformed JSON #{n}",
        source=f"faultline.readings/0/{n}",
        received_at=T0 + n if received_at is None else received_at,
        kind=("malformed", "field", "range")[n % 3],
    )
