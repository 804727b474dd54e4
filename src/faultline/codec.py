"""Readings on the wire (JSON) to columnar batches, and bad messages to dead letters.

Two wire forms are accepted:

* Faultline's: `{"station_id": "s-01", "ts": 1767225600123, "seq": 7,
  "values": {"temperature": 25.1, "humidity": 60.2}}` — `ts` is epoch milliseconds or an
  ISO 8601 string with a timezone;
* seed 000's: `{"station_id": "s-01", "temperature": 25.1, "humidity": 60.2, "noise_level": 50.3}`
  — sensor values at the top level, no `ts` (ingest time is used and the row is marked
  `ts_assigned`) and no `seq` (the bus offset stands in, so replays still collide on the key).

Each message is decoded on its own so one malformed message cannot take a batch with it; all
checks after decoding are vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import pandas as pd

from faultline.config import IngestSettings, SensorSpec
from faultline.schema import (
    READING_COLUMNS,
    RECEIVED_AT,
    SEQ,
    STATION_ID,
    TS,
    TS_ASSIGNED,
    DeadLetter,
)

StationId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
]


Sequence_ = Annotated[int, msgspec.Meta(ge=0)]


class WireReading(msgspec.Struct, omit_defaults=True):
    """One reading as a station sends it (Faultline's form)."""

    station_id: StationId
    ts: int | float | datetime | None = None
    seq: Sequence_ | None = None
    values: Mapping[str, float | None] | None = None


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A payload with where and when it was received; the engine builds these from the bus."""

    payload: bytes
    source: str
    received_at: int
    offset: int


@dataclass(frozen=True)
class Decoded:
    readings: pd.DataFrame
    dead_letters: list[DeadLetter]


def encode_reading(station_id: str, ts: int, seq: int, values: dict[str, float]) -> bytes:
    return _ENCODER.encode(WireReading(station_id=station_id, ts=ts, seq=seq, values=values))


_ENCODER = msgspec.json.Encoder()


class ReadingDecoder:
    """Decodes and validates batches of raw messages against the configured sensors."""

    def __init__(self, sensors: dict[str, SensorSpec], ingest: IngestSettings) -> None:
        self._sensors = tuple(sensors)
        self._index = {name: i for i, name in enumerate(self._sensors)}
        self._low = np.array([s.min for s in sensors.values()])
        self._high = np.array([s.max for s in sensors.values()])
        self._max_future_ms = round(ingest.max_future_s * 1000)
        self._max_late_ms = round(ingest.max_late_s * 1000)
        # The seed's flat form: configured sensors as optional top-level fields.
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            ("station_id", StationId),
            ("ts", int | float | datetime | None, None),
            ("seq", Sequence_ | None, None),
            # Any, not float: msgspec's errors do not name dict keys, and the sensor at fault
            # is what an operator needs to see.
            ("values", dict[str, Any] | None, None),
        ]
        fields += [(name, float | None, None) for name in self._sensors]
        flat = msgspec.defstruct("FlatWireReading", fields)
        self._decoder = msgspec.json.Decoder(flat)

    @property
    def sensors(self) -> tuple[str, ...]:
        return self._sensors

    def decode(self, messages: Sequence[RawMessage]) -> Decoded:
        n = len(messages)
        n_sensors = len(self._sensors)
        station = np.empty(n, dtype=object)
        ts = np.zeros(n, np.int64)
        seq = np.zeros(n, np.int64)
        assigned = np.zeros(n, bool)
        received = np.fromiter((m.received_at for m in messages), np.int64, n)
        values = np.full((n, n_sensors), np.nan)
        reasons: list[tuple[str, str] | None] = [None] * n
        decode = self._decoder.decode
        index = self._index
        sensors = self._sensors

        for i, message in enumerate(messages):
            try:
                wire: Any = decode(message.payload)
            except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
                reasons[i] = _describe(exc)
                continue
            station[i] = wire.station_id
            raw_ts = wire.ts
            if raw_ts is None:
                ts[i] = message.received_at
                assigned[i] = True
            elif isinstance(raw_ts, datetime):
                if raw_ts.tzinfo is None:
                    reasons[i] = (
                        "time",
                        "ts has no timezone: send epoch milliseconds or ISO 8601 with Z",
                    )
                    continue
                ts[i] = round(raw_ts.timestamp() * 1000)
            else:
                ts[i] = round(raw_ts)
            seq[i] = message.offset if wire.seq is None else wire.seq
            row = values[i]
            for j, name in enumerate(sensors):
                flat_value = getattr(wire, name)
                if flat_value is not None:
                    row[j] = flat_value
            if wire.values:
                for name, value in wire.values.items():
                    column = index.get(name)
                    if column is None:
                        reasons[i] = (
                            "sensor",
                            f"unknown sensor {name!r}: configured sensors are {', '.join(sensors)}",
                        )
                        break
                    if value is None:
                        continue
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        reasons[i] = (
                            "field",
                            f"invalid field: values.{name} must be a number or null, "
                            f"got {type(value).__name__}",
                        )
                        break
                    row[column] = value

        self._check_values(values, reasons)
        self._check_times(ts, received, assigned, reasons)

        bad = np.fromiter((r is not None for r in reasons), bool, n)
        dead = []
        for k in np.flatnonzero(bad).tolist():
            kind, reason = reasons[k] or ("invalid", "")
            message = messages[k]
            dead.append(
                DeadLetter(message.payload, reason, message.source, message.received_at, kind)
            )
        good = ~bad
        frame = pd.DataFrame(
            {
                STATION_ID: station[good],
                TS: ts[good],
                SEQ: seq[good],
                TS_ASSIGNED: assigned[good],
                RECEIVED_AT: received[good],
            },
            columns=list(READING_COLUMNS),
        )
        good_values = values[good]
        for j, name in enumerate(sensors):
            frame[name] = good_values[:, j]
        return Decoded(readings=frame, dead_letters=dead)

    def _check_values(self, values: np.ndarray, reasons: list[tuple[str, str] | None]) -> None:
        present = ~np.isnan(values)
        no_values = ~present.any(axis=1)
        # NaN cannot arrive through JSON, but ±inf and NaN can from other producers of frames.
        nonfinite = np.isinf(values)
        with np.errstate(invalid="ignore"):
            out_of_range = present & ~nonfinite & ((values < self._low) | (values > self._high))
        for i in np.flatnonzero(no_values | nonfinite.any(axis=1) | out_of_range.any(axis=1)):
            if reasons[i] is not None:
                continue
            if no_values[i]:
                reasons[i] = (
                    "sensor",
                    f"no sensor values: expected some of {', '.join(self._sensors)}",
                )
                continue
            j = int(np.flatnonzero(nonfinite[i] | out_of_range[i])[0])
            name, value = self._sensors[j], values[i, j]
            if nonfinite[i, j]:
                reasons[i] = ("nonfinite", f"{name} is not a finite number ({value})")
            else:
                reasons[i] = (
                    "range",
                    f"{name}={value:g} outside physical range "
                    f"[{self._low[j]:g}, {self._high[j]:g}]",
                )

    def _check_times(
        self,
        ts: np.ndarray,
        received: np.ndarray,
        assigned: np.ndarray,
        reasons: list[tuple[str, str] | None],
    ) -> None:
        ahead = ts - received
        future = ~assigned & (ahead > self._max_future_ms)
        late = ~assigned & (-ahead > self._max_late_ms)
        for i in np.flatnonzero(future | late):
            if reasons[i] is not None:
                continue
            if future[i]:
                reasons[i] = (
                    "time",
                    f"ts is {ahead[i] / 1000:.0f} s in the future "
                    f"(at most {self._max_future_ms / 1000:.0f} s allowed)",
                )
            else:
                reasons[i] = (
                    "time",
                    f"ts is {-ahead[i] / 1000:.0f} s late "
                    f"(at most {self._max_late_ms / 1000:.0f} s allowed)",
                )


def _describe(exc: msgspec.DecodeError) -> tuple[str, str]:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return "field", f"invalid field: {text}"
    return "malformed", f"malformed JSON: {text}"
