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

import math
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


Sequence_ = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # the store keeps int64

# Event times a reading may carry, epoch ms: 1970-01-01 up to 9999-12-31, the range every store,
# the API's ISO 8601 times and pandas can represent. Anything outside is not a time a station
# could have stamped, and outside int64 it could not even be held.
TS_MIN_MS = 0
TS_MAX_MS = 253_402_300_799_999


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


class _Columns:
    """The column arrays a batch of `n` messages is decoded into (row i: message i)."""

    def __init__(self, n: int, n_sensors: int) -> None:
        self.station = np.empty(n, dtype=object)
        self.ts = np.zeros(n, np.int64)
        self.seq = np.zeros(n, np.int64)
        self.assigned = np.zeros(n, bool)
        self.values = np.full((n, n_sensors), np.nan)


@dataclass(frozen=True)
class Decoded:
    readings: pd.DataFrame
    dead_letters: list[DeadLetter]
    rows: np.ndarray  # int64: the position in the input of the message each reading came from


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
        """Readings and dead letters of `messages`; never raises, whatever the bytes."""
        n = len(messages)
        columns = _Columns(n, len(self._sensors))
        received = np.fromiter((m.received_at for m in messages), np.int64, n)
        reasons: list[tuple[str, str] | None] = [None] * n
        decode = self._decoder.decode
        fill = self._fill

        for i, message in enumerate(messages):
            # Total: whatever the bytes, the outcome is a reading or a reason, never an exception,
            # because one message that raised here would stop the stream for every station.
            try:
                reasons[i] = fill(columns, i, message, decode(message.payload))
            except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
                reasons[i] = _describe(exc)
            except RecursionError:
                reasons[i] = ("malformed", "malformed JSON: nested too deeply")
            except Exception as exc:  # a decoder bug must cost one message, not the stream
                reasons[i] = ("malformed", f"cannot decode: {type(exc).__name__}: {exc}")

        self._check_values(columns.values, reasons)
        self._check_times(columns.ts, received, columns.assigned, reasons)

        bad = np.fromiter((r is not None for r in reasons), bool, n)
        dead = []
        for k in np.flatnonzero(bad).tolist():
            kind, reason = reasons[k] or ("invalid", "")
            message = messages[k]
            dead.append(
                DeadLetter.of(message.payload, reason, message.source, message.received_at, kind)
            )
        good = ~bad
        frame = pd.DataFrame(
            {
                STATION_ID: columns.station[good],
                TS: columns.ts[good],
                SEQ: columns.seq[good],
                TS_ASSIGNED: columns.assigned[good],
                RECEIVED_AT: received[good],
            },
            columns=list(READING_COLUMNS),
        )
        good_values = columns.values[good]
        for j, name in enumerate(self._sensors):
            frame[name] = good_values[:, j]
        return Decoded(readings=frame, dead_letters=dead, rows=np.flatnonzero(good))

    def _fill(
        self, columns: _Columns, i: int, message: RawMessage, wire: Any
    ) -> tuple[str, str] | None:
        """Put one decoded message into row `i` of the columns; the reason when it cannot be."""
        sensors = self._sensors
        columns.station[i] = wire.station_id
        raw_ts = wire.ts
        if raw_ts is None:
            columns.ts[i] = message.received_at
            columns.assigned[i] = True
        else:
            if isinstance(raw_ts, datetime) and raw_ts.tzinfo is None:
                return ("time", "ts has no timezone: send epoch milliseconds or ISO 8601 with Z")
            epoch_ms = _epoch_ms(raw_ts)
            if epoch_ms is None:
                return (
                    "time",
                    f"ts {raw_ts!s:.40} is not a time between 1970 and 9999 "
                    "(epoch milliseconds or ISO 8601 with a timezone)",
                )
            columns.ts[i] = epoch_ms
        columns.seq[i] = message.offset if wire.seq is None else wire.seq
        row = columns.values[i]
        for j, name in enumerate(sensors):
            flat_value = getattr(wire, name)
            if flat_value is not None:
                row[j] = flat_value
        if wire.values:
            for name, value in wire.values.items():
                column = self._index.get(name)
                if column is None:
                    return (
                        "sensor",
                        f"unknown sensor {name!r:.80}: configured sensors are {', '.join(sensors)}",
                    )
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    return (
                        "field",
                        f"invalid field: values.{name} must be a number or null, "
                        f"got {type(value).__name__}",
                    )
                try:
                    row[column] = value
                except OverflowError:  # an integer beyond any float: no sensor reads that
                    return ("range", f"{name} is too large to be a measurement")
        return None

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


def _epoch_ms(raw: int | float | datetime) -> int | None:
    """`raw` as epoch milliseconds in [TS_MIN_MS, TS_MAX_MS], or None when it is not one."""
    if isinstance(raw, datetime):
        try:
            raw = raw.timestamp() * 1000
        except (OverflowError, ValueError, OSError):  # e.g. 0001-01-01T00:00:00+01:00
            return None
    if isinstance(raw, float):
        if not math.isfinite(raw) or not TS_MIN_MS - 1 < raw < TS_MAX_MS + 1:
            return None
        raw = round(raw)
    return raw if TS_MIN_MS <= raw <= TS_MAX_MS else None


def _describe(exc: msgspec.DecodeError) -> tuple[str, str]:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return "field", f"invalid field: {text}"
    return "malformed", f"malformed JSON: {text}"
