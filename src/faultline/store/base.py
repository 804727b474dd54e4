"""The store protocol: `write` what the engine decided, `query` it back.

`write` is atomic and idempotent: a batch is committed whole or not at all, and writing the same
batch again changes nothing (readings are keyed by (station_id, ts, seq), dead letters by their
source, fault labels by (station_id, sensor, kind, start_ts), global anomalies by (day,
station_id, sensor, minute), global-anomaly run records by day). That is what makes the engine's
at-least-once delivery safe. A batch carrying a succeeded global-anomaly run replaces that day's
global anomalies with its own in the same transaction, so running a day again leaves exactly
what the new run found. A write also folds the readings it inserts (and only those) into 1-minute
aggregates per station and sensor, in the same transaction, so replays never count a reading
twice. Queries are typed objects; `query(q)` returns `q`'s result type, and every query is
served from an index, never a full scan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from typing import Generic, TypeVar

import pandas as pd

from faultline.schema import Checkpoint, FaultLabel, GlobalAnomaly, GlobalAnomalyRun, WriteBatch

R = TypeVar("R")


PING_TIMEOUT_S = 2.0  # how long a health check waits for the store's answer


class StoreError(RuntimeError):
    """The store could not complete an operation."""


class InvalidBatch(StoreError):
    """The batch itself cannot be stored (its content, not the backend, is at fault).

    Writing it again will fail again, so a writer isolates the offending rows rather than retry.
    """


class Query(Generic[R]):
    """Base of every query; `R` is what `Store.query` returns for it."""


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


@dataclass(frozen=True, slots=True)
class ReadingRow:
    station_id: str
    ts: int
    seq: int
    ts_assigned: bool
    received_at: int
    processed_at: int
    values: dict[str, float]
    is_anomaly: bool
    scores: dict[str, float | None]  # None: the detector gave no verdict
    sensors: list[str]  # the sensors responsible for the anomaly
    model_version: str


@dataclass(frozen=True, slots=True)
class StationSummary:
    station_id: str
    last_ts: int
    last_received_at: int
    last_values: dict[str, float]
    last_is_anomaly: bool
    readings: int
    anomalies: int


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: int
    received_at: int
    source: str
    reason: str
    payload: bytes
    kind: str = "invalid"  # the class of reason (faultline.schema.DeadLetter.kind)


@dataclass(frozen=True, slots=True)
class ReadingPage:
    rows: list[ReadingRow]
    next_cursor: tuple[int, int] | None  # (ts, seq) to pass as `after` for the next page


@dataclass(frozen=True, slots=True)
class LatestAnomalies(Query[list[ReadingRow]]):
    """Anomalous readings, newest event time first (ties: station_id, then seq, descending)."""

    limit: int = 10
    station_id: str | None = None

    def __post_init__(self) -> None:
        _check_limit(self.limit)


@dataclass(frozen=True, slots=True)
class AnomalyCount(Query[int]):
    """Anomalous readings with start_ms <= ts < end_ms."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class StationReadings(Query[ReadingPage]):
    """One station's readings with start_ms <= ts < end_ms, oldest first, paginated."""

    station_id: str
    start_ms: int
    end_ms: int
    limit: int = 1000
    after: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_limit(self.limit)


@dataclass(frozen=True, slots=True)
class Stations(Query[list[StationSummary]]):
    """Every station seen, with its latest reading (newest (ts, seq)), by station_id."""


@dataclass(frozen=True, slots=True)
class DeadLetters(Query[list[DeadLetterRow]]):
    """Dead letters, newest `received_at` first (ties: the later stored first)."""

    limit: int = 100

    def __post_init__(self) -> None:
        _check_limit(self.limit)


@dataclass(frozen=True, slots=True)
class DeadLetterCount(Query[int]):
    """How many dead letters are stored."""


@dataclass(frozen=True, slots=True)
class FaultLabels(Query[list[FaultLabel]]):
    """Injected faults overlapping [start_ms, end_ms), oldest first.

    A label covers [start_ts, end_ts] (both ends included), so it overlaps when
    start_ts < end_ms and end_ts >= start_ms. Writing a label again with a later end_ts extends it.
    """

    start_ms: int
    end_ms: int
    station_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecentReadings(Query[pd.DataFrame]):
    """The newest `limit` readings, oldest first, as a frame of station_id, ts and float sensor
    columns (for drift): `sensors` when given (NaN where a reading lacks one), else every sensor
    those readings carry."""

    limit: int = 5000
    sensors: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_limit(self.limit)


@dataclass(frozen=True, slots=True)
class MinuteAggregates(Query[pd.DataFrame]):
    """1-minute aggregates of the minutes starting in [start_ms, end_ms), optionally of one
    station and one sensor, as a frame sorted by (station_id, sensor, minute) with the columns of
    faultline.batch.aggregate.AGGREGATE_COLUMNS: station_id, sensor, minute (epoch ms of the
    minute's start), count, sum, min, max and mean, over the sensor's stored readings."""

    start_ms: int
    end_ms: int
    station_id: str | None = None
    sensor: str | None = None


@dataclass(frozen=True, slots=True)
class GlobalAnomalies(Query[list[GlobalAnomaly]]):
    """Global anomalies of the UTC days first_day to last_day (both included; None: first_day
    alone), optionally of one station, sorted by (day, station_id, sensor, minute)."""

    first_day: date
    last_day: date | None = None
    station_id: str | None = None

    @property
    def days(self) -> tuple[date, date]:
        """(first, last) day, both included; last before first means no day at all."""
        return self.first_day, self.first_day if self.last_day is None else self.last_day


@dataclass(frozen=True, slots=True)
class GlobalAnomalyRuns(Query[list[GlobalAnomalyRun]]):
    """The run records of the daily global-anomaly job (each day's latest run) of the UTC days
    first_day to last_day (both included; None: first_day alone), by day. A day missing from
    the result was never run."""

    first_day: date
    last_day: date | None = None

    @property
    def days(self) -> tuple[date, date]:
        """(first, last) day, both included; last before first means no day at all."""
        return self.first_day, self.first_day if self.last_day is None else self.last_day


@dataclass(frozen=True, slots=True)
class Checkpoints(Query[list[Checkpoint]]):
    """The stored checkpoints (faultline.schema.Checkpoint) of consumer `group` on `topic`, one
    per partition, by partition. A write keeps one per (group, topic, partition) and replaces
    it only with one whose offset is not lower (see faultline.store.checkpoints)."""

    group: str
    topic: str


class Store(ABC):
    """Where readings, verdicts, dead letters and fault labels live."""

    @abstractmethod
    def write(self, batch: WriteBatch) -> None:
        """Commit the whole batch atomically; replaying a batch adds nothing.

        Raises StoreError, having committed nothing, when any part of the batch cannot be stored
        (missing or malformed columns, non-finite sensor values, a fault label ending before it
        starts, a global anomaly outside its day or with a non-finite number, a global-anomaly
        run that is inconsistent with itself or with the batch's global anomalies, an
        unreachable backend). Within one batch the first of several readings with the same key
        wins, as it does across batches.
        """

    @abstractmethod
    def query(self, q: Query[R]) -> R:
        """Answer a query; raises TypeError for query types the store does not know."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; afterwards every call raises StoreError."""

    def ping(self) -> None:
        """Raise StoreError when the store cannot answer (used by health checks): within about
        PING_TIMEOUT_S, so that a server gone away is reported rather than waited for."""
        self.query(DeadLetterCount())
