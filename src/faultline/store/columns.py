"""A WriteBatch checked and taken apart into numpy columns: the form every store writes from.

The checks here raise InvalidBatch; faultline.store.valid runs all of them, and more, before any
backend is touched, so every store rejects the same bad batches with the same messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime

import numpy as np
import pandas as pd

from faultline.clock import datetime_to_ms, ms_to_datetime
from faultline.schema import (
    IS_ANOMALY,
    MODEL_VERSION,
    READING_COLUMNS,
    RECEIVED_AT,
    RUN_FAILED,
    RUN_SUCCEEDED,
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
    mask_to_sensors,
    score_column,
)
from faultline.store.aggregate import anomaly_minutes, minute_partials
from faultline.store.base import InvalidBatch, StoreError

DAY_MS = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

GlobalAnomalyRow = tuple[int, str, str, int, float, float, float]
"""(day number, station_id, sensor, minute, value, expected, score): a GlobalAnomaly stored."""
GlobalAnomalyRunRow = tuple[int, int, int, str, int, dict[str, int], int, str | None]
"""(day number, started_at ms, finished_at ms, status, series, skipped by reason, anomalies,
error): a GlobalAnomalyRun stored."""


@dataclass(frozen=True)
class BatchColumns:
    """The readings of one batch, one row per key (station_id, ts, seq)."""

    sensors: tuple[str, ...]
    detectors: tuple[str, ...]
    station_id: np.ndarray  # object array of str
    ts: np.ndarray  # int64
    seq: np.ndarray  # int64
    ts_assigned: np.ndarray  # bool
    received_at: np.ndarray  # int64
    values: np.ndarray  # float64 (rows, sensors); NaN where the station does not carry a sensor
    is_anomaly: np.ndarray  # bool
    sensor_mask: np.ndarray  # int64
    model_version: np.ndarray  # object array of str
    scores: np.ndarray  # float64 (rows, detectors); NaN where a detector gave no verdict

    def __len__(self) -> int:
        return len(self.ts)

    def latest_per_station(self) -> np.ndarray:
        """Positions of each station's newest row, newest meaning the greatest (ts, seq)."""
        keys = pd.DataFrame({"station": self.station_id, "ts": self.ts, "seq": self.seq})
        newest = keys.sort_values(["ts", "seq"], kind="stable").drop_duplicates(
            "station", keep="last"
        )
        return newest.index.to_numpy()

    def counts_per_station(self, rows: np.ndarray | None = None) -> dict[str, tuple[int, int]]:
        """(readings, anomalies) of each station in the batch, or in the rows the boolean mask
        `rows` picks."""
        pick = slice(None) if rows is None else rows
        per_station = (
            pd.DataFrame({"station": self.station_id[pick], "anomaly": self.is_anomaly[pick]})
            .groupby("station", sort=False)["anomaly"]
            .agg(["size", "sum"])
        )
        pairs = zip(per_station["size"].tolist(), per_station["sum"].tolist(), strict=True)
        return dict(zip(per_station.index.tolist(), pairs, strict=True))

    def minute_partials(self, rows: np.ndarray) -> pd.DataFrame:
        """faultline.store.aggregate.minute_partials of the rows the boolean mask `rows` picks."""
        frame = pd.DataFrame(self.values[rows], columns=list(self.sensors))
        frame.insert(0, TS, self.ts[rows])
        frame.insert(0, STATION_ID, self.station_id[rows])
        return minute_partials(frame, self.sensors)

    def anomaly_minutes(self, rows: np.ndarray) -> list[tuple[int, int]]:
        """faultline.store.aggregate.anomaly_minutes of the rows the boolean mask `rows` picks."""
        return anomaly_minutes(self.ts, rows & self.is_anomaly)

    def responsible_sensors(self) -> tuple[list[list[str]], np.ndarray]:
        """The distinct sensor-name lists the masks stand for, and each row's index into them."""
        masks, inverse = np.unique(self.sensor_mask, return_inverse=True)
        names = [mask_to_sensors(int(mask), self.sensors) for mask in masks]
        return names, inverse.reshape(-1)


def batch_columns(batch: WriteBatch) -> BatchColumns:
    """Check `batch.readings` and return its columns; duplicate keys keep their first row.

    Raises InvalidBatch naming the column at fault. A zero-row frame needs no columns at all, so a
    batch made only of dead letters or fault labels can carry an empty DataFrame.
    """
    sensors, detectors = tuple(batch.sensors), tuple(batch.detectors)
    _check_unique("sensors", sensors)
    _check_unique("detectors", detectors)
    frame = batch.readings
    if len(frame) == 0:
        return _empty(sensors, detectors)
    scores = [score_column(d) for d in detectors]
    required = [*READING_COLUMNS, *sensors, IS_ANOMALY, SENSOR_MASK, MODEL_VERSION, *scores]
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise InvalidBatch(f"readings frame lacks columns: {', '.join(missing)}")
    columns = BatchColumns(
        sensors=sensors,
        detectors=detectors,
        station_id=_strings(frame, STATION_ID, keyed=True),
        ts=_integers(frame, TS),
        seq=_integers(frame, SEQ),
        ts_assigned=_flags(frame, TS_ASSIGNED),
        received_at=_integers(frame, RECEIVED_AT),
        values=_floats(frame, sensors),
        is_anomaly=_flags(frame, IS_ANOMALY),
        sensor_mask=_integers(frame, SENSOR_MASK),
        model_version=_strings(frame, MODEL_VERSION),
        scores=_floats(frame, scores),
    )
    _check_values(columns)
    _check_masks(columns)
    return _first_per_key(columns)


def check_faults(faults: Sequence[FaultLabel]) -> None:
    """Refuse fault labels that end before they start (stores with constraints refuse them too)."""
    for label in faults:
        if label.end_ts < label.start_ts:
            raise InvalidBatch(
                f"fault label {label.kind} on {label.station_id}/{label.sensor} ends "
                f"({label.end_ts}) before it starts ({label.start_ts})"
            )


def dead_letter_fields(
    letters: Sequence[DeadLetter],
) -> list[tuple[int, str, str, bytes, str]]:
    """(received_at, source, reason, payload, kind) of each dead letter, checked before storing."""
    out = []
    for letter in letters:
        payload = letter.payload
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidBatch(
                f"dead letter {letter.source!r} has a {type(payload).__name__} payload, not bytes"
            )
        texts = (letter.source, letter.reason, letter.kind)
        if not all(isinstance(text, str) for text in texts):
            raise InvalidBatch(f"dead letter {letter.source!r} needs str source, reason and kind")
        out.append(
            (int(letter.received_at), letter.source, letter.reason, bytes(payload), letter.kind)
        )
    return out


def check_texts(what: str, texts: Iterable[str], *, keyed: bool = False) -> None:
    """Refuse text some backend cannot hold: NUL (PostgreSQL text), lone surrogates (no UTF-8
    encoding: SQLite, PostgreSQL and Cassandra), and, for the parts of a key, the empty string
    (Cassandra refuses an empty partition key)."""
    for text in texts:
        if not isinstance(text, str):
            raise InvalidBatch(f"{what} must be str, got {type(text).__name__}")
        if keyed and not text:
            raise InvalidBatch(f"{what} must not be empty")
        if "\x00" in text:
            raise InvalidBatch(f"{what} {text!r} holds a NUL character, which stores cannot hold")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidBatch(f"{what} {text!r} is not valid Unicode (a lone surrogate)") from None


def day_number(day: date) -> int:
    """Days since 1970-01-01: how stores keep a UTC day."""
    return day.toordinal() - _EPOCH_ORDINAL


def day_of(number: int) -> date:
    return date.fromordinal(number + _EPOCH_ORDINAL)


def global_anomaly_rows(anomalies: Sequence[GlobalAnomaly]) -> list[GlobalAnomalyRow]:
    """The stored form of each global anomaly, checked: its minute lies in its day, its numbers
    are finite, and no two share a key (which of them would be meant?)."""
    rows: dict[tuple[int, str, str, int], GlobalAnomalyRow] = {}
    for a in anomalies:
        if not (isinstance(a.station_id, str) and isinstance(a.sensor, str)):
            raise InvalidBatch(f"global anomaly {a!r} needs str station_id and sensor")
        day = day_number(a.day)
        minute = int(a.minute)
        if not day * DAY_MS <= minute < (day + 1) * DAY_MS:
            raise InvalidBatch(
                f"global anomaly of {a.station_id}/{a.sensor}: minute {minute} is not in its "
                f"day {a.day.isoformat()}"
            )
        numbers = (float(a.value), float(a.expected), float(a.score))
        if not all(math.isfinite(x) for x in numbers):
            raise InvalidBatch(
                f"global anomaly of {a.station_id}/{a.sensor} at minute {minute}: value, "
                f"expected and score must be finite, got {numbers}"
            )
        key = (day, a.station_id, a.sensor, minute)
        if key in rows:
            raise InvalidBatch(
                f"global anomaly of {a.station_id}/{a.sensor} at minute {minute} on "
                f"{a.day.isoformat()} appears twice in one batch"
            )
        rows[key] = (*key, *numbers)
    return list(rows.values())


def global_anomaly(row: GlobalAnomalyRow) -> GlobalAnomaly:
    """A stored global anomaly (in GlobalAnomalyRow order) back as a GlobalAnomaly."""
    day, station_id, sensor, minute, value, expected, score = row
    return GlobalAnomaly(day_of(day), station_id, sensor, minute, value, expected, score)


def global_anomaly_run_row(
    batch: WriteBatch, anomalies: Sequence[GlobalAnomalyRow]
) -> GlobalAnomalyRunRow | None:
    """The stored form of the batch's global-anomaly run (None when it has none), checked
    against itself and against `anomalies`, the batch's global anomalies as
    global_anomaly_rows returned them: a succeeded run carries exactly the anomalies it counts,
    all of its day (they replace the day's), a failed run carries none and says why."""
    run = batch.global_anomaly_run
    if run is None:
        return None
    if not isinstance(run.day, date):
        raise InvalidBatch(f"global-anomaly run: day must be a date, got {run.day!r}")
    name = f"global-anomaly run of {run.day.isoformat()}"
    started = _utc_ms(name, "started_at", run.started_at)
    finished = _utc_ms(name, "finished_at", run.finished_at)
    if finished < started:
        raise InvalidBatch(f"{name}: finished_at {run.finished_at} is before started_at")
    if run.status not in (RUN_SUCCEEDED, RUN_FAILED):
        raise InvalidBatch(
            f"{name}: status must be {RUN_SUCCEEDED!r} or {RUN_FAILED!r}, got {run.status!r}"
        )
    series = _count(name, "series", run.series)
    found = _count(name, "anomalies", run.anomalies)
    skipped = {}
    for reason, n in dict(run.skipped).items():
        if not (isinstance(reason, str) and reason):
            raise InvalidBatch(f"{name}: skip reasons must be non-empty str, got {reason!r}")
        skipped[reason] = _count(name, f"skipped[{reason!r}]", n)
    day = day_number(run.day)
    if run.status == RUN_FAILED:
        if not (isinstance(run.error, str) and run.error):
            raise InvalidBatch(f"{name}: a failed run must say why in error")
        if anomalies:
            raise InvalidBatch(f"{name}: a failed run stores no global anomalies")
    else:
        if run.error is not None:
            raise InvalidBatch(f"{name}: a succeeded run has no error, got {run.error!r}")
        if len(anomalies) != found:
            raise InvalidBatch(
                f"{name}: the run counts {found} anomalies but the batch carries {len(anomalies)}"
            )
        other = next((row for row in anomalies if row[0] != day), None)
        if other is not None:
            raise InvalidBatch(
                f"{name}: the batch carries a global anomaly of {day_of(other[0]).isoformat()}"
            )
    return (day, started, finished, run.status, series, skipped, found, run.error)


def global_anomaly_run(row: GlobalAnomalyRunRow) -> GlobalAnomalyRun:
    """A stored run record (in GlobalAnomalyRunRow order) back as a GlobalAnomalyRun."""
    day, started, finished, status, series, skipped, anomalies, error = row
    if status not in (RUN_SUCCEEDED, RUN_FAILED):
        raise StoreError(f"stored global-anomaly run of {day_of(day)} has status {status!r}")
    return GlobalAnomalyRun(
        day=day_of(day),
        started_at=ms_to_datetime(started),
        finished_at=ms_to_datetime(finished),
        status=status,
        series=series,
        skipped=dict(sorted(skipped.items())),
        anomalies=anomalies,
        error=error,
    )


def _utc_ms(name: str, what: str, value: object) -> int:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidBatch(f"{name}: {what} must be a timezone-aware datetime, got {value!r}")
    return datetime_to_ms(value)


def _count(name: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidBatch(f"{name}: {what} must be a whole number >= 0, got {value!r}")
    return int(value)


def recent_frame(
    station_ids: list[str], ts: list[int], values: list[dict[str, float]], sensors: Sequence[str]
) -> pd.DataFrame:
    """The RecentReadings result: station_id, ts, then float sensor columns.

    With no `sensors` asked for, the columns are every sensor the readings carry, in the order
    first seen.
    """
    names = list(sensors) or list(dict.fromkeys(name for row in values for name in row))
    frame = pd.DataFrame.from_records(values, columns=names, nrows=len(values)).astype(np.float64)
    frame.insert(0, TS, np.array(ts, dtype=np.int64))
    frame.insert(0, STATION_ID, pd.Series(station_ids, dtype=object))
    return frame


def _empty(sensors: tuple[str, ...], detectors: tuple[str, ...]) -> BatchColumns:
    ints = np.empty(0, np.int64)
    return BatchColumns(
        sensors=sensors,
        detectors=detectors,
        station_id=np.empty(0, object),
        ts=ints,
        seq=ints,
        ts_assigned=np.empty(0, bool),
        received_at=ints,
        values=np.empty((0, len(sensors))),
        is_anomaly=np.empty(0, bool),
        sensor_mask=ints,
        model_version=np.empty(0, object),
        scores=np.empty((0, len(detectors))),
    )


def _check_unique(what: str, names: tuple[str, ...]) -> None:
    if len(set(names)) != len(names):
        raise InvalidBatch(f"batch {what} must be unique, got {list(names)}")


def _strings(frame: pd.DataFrame, name: str, *, keyed: bool = False) -> np.ndarray:
    column = frame[name]
    kind = pd.api.types.infer_dtype(column, skipna=False)
    if kind != "string":
        raise InvalidBatch(f"column {name!r} must hold strings, found {kind} values")
    values = column.to_numpy(dtype=object)
    check_texts(name, dict.fromkeys(values.tolist()), keyed=keyed)
    return values


def _integers(frame: pd.DataFrame, name: str) -> np.ndarray:
    column = frame[name]
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_integer_dtype(column):
        raise InvalidBatch(f"column {name!r} must hold integers, found dtype {column.dtype}")
    if column.hasnans:
        raise InvalidBatch(f"column {name!r} has missing values")
    return column.to_numpy(dtype=np.int64)


def _flags(frame: pd.DataFrame, name: str) -> np.ndarray:
    column = frame[name]
    if not pd.api.types.is_bool_dtype(column):
        raise InvalidBatch(f"column {name!r} must hold booleans, found dtype {column.dtype}")
    if column.hasnans:
        raise InvalidBatch(f"column {name!r} has missing values")
    return column.to_numpy(dtype=bool)


def _floats(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    for name in names:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            raise InvalidBatch(f"column {name!r} must hold numbers, found dtype {column.dtype}")
    return (
        frame[list(names)]
        .to_numpy(dtype=np.float64, na_value=np.nan)
        .reshape(len(frame), len(names))
    )


def _check_values(columns: BatchColumns) -> None:
    infinite = np.isinf(columns.values)
    if infinite.any():
        row, col = (int(i[0]) for i in np.nonzero(infinite))
        raise InvalidBatch(
            f"sensor {columns.sensors[col]!r} of station {columns.station_id[row]!r} at "
            f"ts={columns.ts[row]} is {columns.values[row, col]}: sensor values must be finite"
        )


def _check_masks(columns: BatchColumns) -> None:
    beyond = (columns.sensor_mask < 0) | (columns.sensor_mask >> len(columns.sensors) != 0)
    if beyond.any():
        mask = int(columns.sensor_mask[np.flatnonzero(beyond)[0]])
        raise InvalidBatch(
            f"{SENSOR_MASK} {mask:#b} names sensors beyond the {len(columns.sensors)} "
            f"in this batch ({', '.join(columns.sensors)})"
        )


def _first_per_key(columns: BatchColumns) -> BatchColumns:
    keys = pd.DataFrame({"station": columns.station_id, "ts": columns.ts, "seq": columns.seq})
    repeated = keys.duplicated().to_numpy()
    if not repeated.any():
        return columns
    keep = ~repeated
    per_row = {
        f.name: getattr(columns, f.name)[keep]
        for f in fields(columns)
        if f.name not in ("sensors", "detectors")
    }
    return replace(columns, **per_row)
