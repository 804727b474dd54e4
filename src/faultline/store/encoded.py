"""Readings encoded for a server store, and stored rows decoded back, shared by the server backends.

Sensor values, scores and responsible sensors travel as JSON text (faultline.store.json_text), the
same representation the SQLite store keeps, so every backend round-trips floats exactly and keeps
"no verdict" (null) apart from a number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from faultline.store.base import ReadingRow
from faultline.store.columns import BatchColumns
from faultline.store.json_text import json_list, json_objects


@dataclass(frozen=True)
class EncodedReadings:
    """One batch's readings as plain Python lists, one entry per reading, ready for a driver."""

    station_id: list[str]
    ts: list[int]
    seq: list[int]
    ts_assigned: list[bool]
    received_at: list[int]
    values: list[str]  # JSON object, sensors the station did not carry left out
    is_anomaly: list[bool]
    scores: list[str]  # JSON object, null where a detector gave no verdict
    sensors: list[str]  # JSON list of the sensors responsible for an anomaly
    model_version: list[str]

    def __len__(self) -> int:
        return len(self.ts)


def encode_readings(columns: BatchColumns) -> EncodedReadings:
    names, which = columns.responsible_sensors()
    sensor_texts = [json_list(group) for group in names]
    return EncodedReadings(
        station_id=columns.station_id.tolist(),
        ts=columns.ts.tolist(),
        seq=columns.seq.tolist(),
        ts_assigned=columns.ts_assigned.tolist(),
        received_at=columns.received_at.tolist(),
        values=json_objects(columns.values, columns.sensors, omit_nan=True).tolist(),
        is_anomaly=columns.is_anomaly.tolist(),
        scores=json_objects(columns.scores, columns.detectors, omit_nan=False).tolist(),
        sensors=[sensor_texts[w] for w in which.tolist()],
        model_version=columns.model_version.tolist(),
    )


def decode_reading(
    station_id: str,
    ts: int,
    seq: int,
    ts_assigned: bool,
    received_at: int,
    processed_at: int,
    values: str,
    is_anomaly: bool,
    scores: str,
    sensors: str,
    model_version: str,
) -> ReadingRow:
    """A stored reading, its columns in the order of the parameters, as a ReadingRow."""
    return ReadingRow(
        station_id=station_id,
        ts=ts,
        seq=seq,
        ts_assigned=bool(ts_assigned),
        received_at=received_at,
        processed_at=processed_at,
        values=json.loads(values),
        is_anomaly=bool(is_anomaly),
        scores=json.loads(scores),
        sensors=json.loads(sensors),
        model_version=model_version,
    )
