"""The store protocol: `write` what the engine decided, `query` it back, `expire` old dead letters.

`write` is idempotent: writing the same batch again changes nothing (readings are keyed by
(station_id, ts, seq), dead letters by their source, fault labels by (station_id, sensor, kind,
start_ts), global anomalies by (day, station_id, sensor, minute), global-anomaly run records by
day). That is what makes the engine's at-least-once delivery safe. How much of a batch a failed
write may leave behind is each store's `atomicity`, and the contract suite tests it by failing
the backend halfway through a write:

* `Atomicity.BATCH` (memory, SQLite, PostgreSQL): a batch is committed whole or not at all.
* `Atomicity.PARTITION` (Cassandra): each partition's share of a batch is committed whole or not
  at all, but a write failing halfway may leave some partitions written and others not; writing
  the batch again (what the engine does with any batch whose write failed) completes it, and
  every count and aggregate then holds each reading exactly once.

Every store first checks the whole batch with faultline.store.valid.validate and refuses an
invalid one with InvalidBatch, the same message whatever the backend, before it writes anything.

Dead letters are kept only as long as a DeadLetterRetention says: `expire` deletes those older
than its age and those beyond its count (newest kept), so a flood of bad messages cannot fill
the store. A batch written again after its letters expired stores them again.

Alarms (faultline.alarm_schema) are kept twice: every transition in a log keyed by
`AlarmTransition.key` (a replayed one is ignored), each with the `processed_at` of the batch
that carried it as its `recorded_at`; and one row per alarm holding its current state, whose
two parts are updated separately so that neither overwrites the other: a condition transition
(raise, escalate, clear) sets only the condition, and only when it is not older, in
(ts, clear < raise < escalate) order, than the one the row holds, so a replayed older batch
never moves it back; an ack sets the acknowledgement only for an activation not older than the
acknowledged one; shelve/unshelve set the shelving only when not older (by (ts, key)) than the
last shelving change; comments live in the log alone. Operator transitions race engine ones for
the same alarm freely: both are kept. Only a transition new to the log touches a row (a known key
carrying other content changes nothing; within a batch the first of several with one key wins).
A clear keeps the severity and sensors of the activation it ends, as
faultline.alarms.state.apply does. So a row is its history folded with `apply` (comments aside)
whenever each alarm's condition transitions arrive in order (as the engine writes them) and acks
come for activations that do not go back; where they do not, the guards above win: a late older
transition is in the log only, and an ack of an older activation never unacknowledges a newer
one. Stores hold every part to these rules alike (faultline.store.alarm_rows).

A batch carrying a succeeded global-anomaly run replaces that day's global anomalies with its
own, so running a day again leaves exactly what the new run found. A write also folds the
readings it inserts (and only those) into 1-minute aggregates per station and sensor, so
replays never count a reading twice. Queries are typed objects, checked when they are made
(QueryError); `query(q)` returns `q`'s result type, and every query is served from an index,
never a full scan.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from typing import ClassVar, Generic, Literal, TypeVar, get_args

import pandas as pd

from faultline.alarm_schema import AlarmState, AlarmTransition
from faultline.config import SEVERITIES, Severity
from faultline.schema import Checkpoint, FaultLabel, GlobalAnomaly, GlobalAnomalyRun, WriteBatch

R = TypeVar("R")


PING_TIMEOUT_S = 2.0  # how long a health check waits for the store's answer


class StoreError(RuntimeError):
    """The store could not complete an operation."""


class InvalidBatch(StoreError):
    """The batch itself cannot be stored (its content, not the backend, is at fault).

    Writing it again will fail again, so a writer isolates the offending rows rather than retry.
    """


class Atomicity(enum.Enum):
    """What a store guarantees about a write that fails halfway (see the module docstring)."""

    BATCH = "committed whole or not at all"
    PARTITION = "atomic per partition, completed by writing the batch again"


@dataclass(frozen=True, slots=True)
class DeadLetterRetention:
    """Which dead letters a store keeps: none received more than `max_age_s` before now, and of
    the rest only the newest `max_count` (newest as DeadLetters orders them)."""

    max_age_s: float
    max_count: int

    def __post_init__(self) -> None:
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be above 0, got {self.max_age_s}")
        if self.max_count < 0:
            raise ValueError(f"max_count must be at least 0, got {self.max_count}")

    def cutoff_ms(self, now_ms: int) -> int:
        """Letters received before this instant are too old."""
        return now_ms - round(self.max_age_s * 1000)


class Query(Generic[R]):
    """Base of every query; `R` is what `Store.query` returns for it."""


class QueryError(ValueError):
    """A query that cannot be asked as it stands (the API answers it with 400)."""


FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z"
LAST_DAY = date(9999, 12, 30)  # the last day whose end, the next midnight, is representable


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise QueryError(f"limit must be at least 1, got {limit}")


def check_instants(**instants: int) -> None:
    """QueryError unless every instant (epoch ms, by name) lies where a UTC datetime can show
    it, as every store and every answer must."""
    for name, ms in instants.items():
        if not FIRST_MS <= ms <= LAST_MS:
            raise QueryError(f"{name} ({ms} ms since 1970) is outside the times {_RANGE}")


def _check_days(first: date, last: date | None) -> None:
    for day in (first, last):
        if day is not None and day > LAST_DAY:
            raise QueryError(
                f"day {day.isoformat()} ends at 10000-01-01, which no time can represent: "
                f"the last day that can be asked for is {LAST_DAY.isoformat()}"
            )


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

    def __post_init__(self) -> None:
        check_instants(start_ms=self.start_ms, end_ms=self.end_ms)


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
        check_instants(start_ms=self.start_ms, end_ms=self.end_ms)


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

    def __post_init__(self) -> None:
        check_instants(start_ms=self.start_ms, end_ms=self.end_ms)


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

    def __post_init__(self) -> None:
        check_instants(start_ms=self.start_ms, end_ms=self.end_ms)


@dataclass(frozen=True, slots=True)
class GlobalAnomalies(Query[list[GlobalAnomaly]]):
    """Global anomalies of the UTC days first_day to last_day (both included; None: first_day
    alone), optionally of one station, sorted by (day, station_id, sensor, minute)."""

    first_day: date
    last_day: date | None = None
    station_id: str | None = None

    def __post_init__(self) -> None:
        _check_days(self.first_day, self.last_day)

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

    def __post_init__(self) -> None:
        _check_days(self.first_day, self.last_day)

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


@dataclass(frozen=True, slots=True)
class RecordedTransition:
    """An alarm transition as the log holds it: `recorded_at` is the `processed_at` of the batch
    that first carried it (epoch ms UTC, the writer's clock)."""

    transition: AlarmTransition
    recorded_at: int


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm's current state as its row holds it (`operator.comments` is always empty here:
    comments are in its history), and the time of its latest condition or operator change: the
    latest ts among the transitions that set its parts as they stand (a comment changes no row).
    An alarm has a row once a transition other than a comment was stored for it."""

    state: AlarmState
    changed_at: int


@dataclass(frozen=True, slots=True)
class AlarmPage:
    rows: list[AlarmRow]
    next_cursor: tuple[int, str] | None  # (changed_at, alarm id) to pass as `after`


AlarmStateFilter = Literal["active", "cleared", "unacknowledged", "acknowledged", "shelved"]
ALARM_STATE_FILTERS: tuple[AlarmStateFilter, ...] = get_args(AlarmStateFilter)


@dataclass(frozen=True, slots=True)
class Alarms(Query[AlarmPage]):
    """Alarms, latest change first (ties: alarm id ascending), paginated.

    `state`: "active"/"cleared" by condition (cleared: activated, no longer active);
    "unacknowledged"/"acknowledged" by whether the latest activation is acknowledged (an alarm
    never active is none of these four); "shelved": shelved at `now_ms` (required then).
    `min_severity`: the condition's severity is at least this. `since_ms`: changed at or after.
    `after`: the `next_cursor` of the previous page.
    """

    state: AlarmStateFilter | None = None
    station_id: str | None = None
    min_severity: Severity | None = None
    since_ms: int | None = None
    now_ms: int | None = None
    limit: int = 100
    after: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        _check_limit(self.limit)
        if self.state is not None and self.state not in ALARM_STATE_FILTERS:
            raise QueryError(
                f"alarm state {self.state!r} is not one of {', '.join(ALARM_STATE_FILTERS)}"
            )
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise QueryError(
                f"severity {self.min_severity!r} is not one of {', '.join(SEVERITIES)}"
            )
        if self.state == "shelved" and self.now_ms is None:
            raise QueryError("the shelved alarms are those shelved at now_ms, which is missing")
        for name in ("since_ms", "now_ms"):
            value = getattr(self, name)
            if value is not None:
                check_instants(**{name: value})


@dataclass(frozen=True, slots=True)
class AlarmHistory(Query[list[RecordedTransition]]):
    """Every transition of one alarm (`AlarmKey.id`), in (ts, clear < raise < escalate <
    operator actions, key) order; empty for an alarm that does not exist."""

    alarm_id: str


@dataclass(frozen=True, slots=True)
class AlarmTransitions(Query[list[AlarmTransition]]):
    """Transitions whose `ts` lies in [start_ms, end_ms), optionally only of `actions`, in
    (ts, alarm, key) order (the alarm as AlarmKey orders: station_id, sensor, kind): what
    alarm-load figures are computed from."""

    start_ms: int
    end_ms: int
    actions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_instants(start_ms=self.start_ms, end_ms=self.end_ms)


@dataclass(frozen=True, slots=True)
class TransitionFeed(Query[list[RecordedTransition]]):
    """The log in record order, (recorded_at, key) ascending, strictly after `after` (a
    (recorded_at, key) pair; None: from the start), at most `limit`: the notifier's outbox.

    `recorded_at` is the writing process's clock, so a writer whose clock is behind (the API's
    against the engine's) can record a transition before a cursor already passed; a reader that
    must see every transition reads again from a cursor some time back and skips known keys."""

    after: tuple[int, str] | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        _check_limit(self.limit)
        if self.after is not None:
            check_instants(after=self.after[0])


class Store(ABC):
    """Where readings, verdicts, dead letters and fault labels live."""

    atomicity: ClassVar[Atomicity]
    """What a write that fails halfway leaves behind."""

    @abstractmethod
    def write(self, batch: WriteBatch) -> None:
        """Commit the batch, as far as `atomicity` promises; replaying a batch adds nothing.

        Raises InvalidBatch, having written nothing, when any part of the batch cannot be stored
        (missing or malformed columns, non-finite sensor values, text a backend cannot hold, a
        fault label ending before it starts, an alarm transition with a time outside the
        representable range, a global anomaly outside its day or with a non-finite number, a
        global-anomaly run that is inconsistent with itself or with the batch's global
        anomalies); StoreError when the backend fails. Within one batch the first
        of several readings with the same key wins, as it does across batches.
        """

    @abstractmethod
    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        """Delete the dead letters `retention` does not keep at `now_ms` (epoch ms UTC); how
        many went. Raises StoreError when the backend fails (what went, went)."""

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
