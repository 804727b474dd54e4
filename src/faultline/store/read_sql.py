"""The read queries of the SQLite and PostgreSQL stores: each query's SQL, written once and spelled
for a store by its Dialect, run on a connection the store lends, its rows mapped to its result.

Only reads are shared. The schemas (SQLite's STRICT tables keyed for appending; PostgreSQL's
day partitions and "C" collation) and the writes (INSERT OR IGNORE under a savepoint; COPY into a
staging table and one merging statement) differ for real, and stay in each store's file, as do
its connections.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import pandas as pd

from faultline.schema import FaultLabel
from faultline.store.aggregate import aggregate_frame
from faultline.store.aggregate_sql import (
    Sql,
    anomaly_count_sql,
    global_anomalies_sql,
    global_anomaly_runs_sql,
    minute_aggregates_sql,
    run_from_sql,
)
from faultline.store.alarm_sql import (
    alarm_history_sql,
    alarm_page,
    alarm_transitions_sql,
    alarms_sql,
    recorded_transition,
    transition_feed_sql,
)
from faultline.store.base import (
    AlarmHistory,
    Alarms,
    AlarmTransitions,
    AnomalyCount,
    Checkpoints,
    DeadLetterCount,
    DeadLetterRow,
    DeadLetters,
    FaultLabels,
    GlobalAnomalies,
    GlobalAnomalyRuns,
    LatestAnomalies,
    MinuteAggregates,
    Query,
    R,
    ReadingPage,
    RecentReadings,
    StationReadings,
    Stations,
    StationSummary,
    StoreError,
    TransitionFeed,
)
from faultline.store.checkpoints import checkpoint, checkpoints_sql
from faultline.store.columns import global_anomaly, global_anomaly_run, recent_frame
from faultline.store.encoded import decode_reading

READING_COLUMNS = (
    'station_id, ts, seq, ts_assigned, received_at, processed_at, "values", is_anomaly, scores, '
    "sensors, model_version"
)
"""The readings table's columns in decode_reading's order."""


@dataclass(frozen=True)
class Dialect:
    """What a store's read SQL spells its own way."""

    mark: str
    """The parameter marker: `?` for sqlite3, `%s` for psycopg."""
    anomalous: str
    """The condition on anomalous readings, spelled as the store's partial indexes declare it:
    a planner takes a partial index only for a WHERE clause that implies its predicate."""
    ts_bound_after_cursor: bool
    """Whether a page after a cursor also bounds ts alone, by the cursor's ts: PostgreSQL prunes
    day partitions only by a plain bound on ts; SQLite, with one lower bound, starts its index
    search right at the page."""


class Rows(Protocol):
    """A cursor, for its rows."""

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What a read needs of a DB-API connection (sqlite3's, psycopg's)."""

    def execute(self, statement: str, params: tuple[Any, ...], /) -> Rows: ...


def query_sql(q: Query[Any], dialect: Dialect) -> Sql | None:
    """q's SQL and parameters in `dialect`; None for a query these stores do not serve."""
    build = _SQL.get(type(q))
    return None if build is None else build(q, dialect)


def answer(
    q: Query[R],
    sql: Sql,
    reader: Callable[[], AbstractContextManager[Connection]],
    errors: type[Exception],
) -> R:
    """q's result from its `sql`, run on a connection `reader` lends; a driver error (`errors`)
    is raised as a StoreError."""
    statement, params = sql
    with reader() as conn:
        try:
            rows = conn.execute(statement, params).fetchall()
        except errors as exc:
            raise StoreError(f"{type(q).__name__} failed: {exc}") from exc
    return cast(R, _RESULTS[type(q)](q, rows))


def _latest_anomalies_sql(q: LatestAnomalies, d: Dialect) -> Sql:
    if q.station_id is None:
        return (
            f"SELECT {READING_COLUMNS} FROM readings WHERE {d.anomalous} "
            f"ORDER BY ts DESC, station_id DESC, seq DESC LIMIT {d.mark}",
            (q.limit,),
        )
    return (
        f"SELECT {READING_COLUMNS} FROM readings WHERE {d.anomalous} AND station_id = {d.mark} "
        f"ORDER BY ts DESC, seq DESC LIMIT {d.mark}",
        (q.station_id, q.limit),
    )


def _station_readings_sql(q: StationReadings, d: Dialect) -> Sql:
    # Past start_ms the cursor replaces it as the lower bound.
    m = d.mark
    bound: tuple[int, ...]
    if q.after is None or q.after[0] < q.start_ms:
        lower, bound = f"ts >= {m}", (q.start_ms,)
    elif d.ts_bound_after_cursor:
        lower, bound = f"(ts, seq) > ({m}, {m}) AND ts >= {m}", (*q.after, q.after[0])
    else:
        lower, bound = f"(ts, seq) > ({m}, {m})", q.after
    return (
        f"SELECT {READING_COLUMNS} FROM readings WHERE station_id = {m} AND {lower} AND ts < {m} "
        f"ORDER BY ts, seq LIMIT {m}",
        (q.station_id, *bound, q.end_ms, q.limit + 1),  # one more tells whether a page follows
    )


def _fault_labels_sql(q: FaultLabels, d: Dialect) -> Sql:
    m = d.mark
    station, params = (
        ("", ()) if q.station_id is None else (f"AND station_id = {m} ", (q.station_id,))
    )
    return (
        "SELECT station_id, sensor, kind, start_ts, end_ts FROM fault_labels "
        f"WHERE start_ts < {m} AND end_ts >= {m} {station}"
        "ORDER BY start_ts, station_id, sensor, kind",
        (q.end_ms, q.start_ms, *params),
    )


_SQL: dict[type[Any], Callable[[Any, Dialect], Sql]] = {
    LatestAnomalies: _latest_anomalies_sql,
    AnomalyCount: lambda q, d: anomaly_count_sql(q, d.mark, d.anomalous),
    StationReadings: _station_readings_sql,
    Stations: lambda _q, _d: (
        "SELECT station_id, last_ts, last_received_at, last_values, last_is_anomaly, readings, "
        "anomalies FROM stations ORDER BY station_id",
        (),
    ),
    DeadLetters: lambda q, d: (
        "SELECT id, received_at, source, reason, payload, kind FROM dead_letters "
        f"ORDER BY received_at DESC, id DESC LIMIT {d.mark}",
        (q.limit,),
    ),
    DeadLetterCount: lambda _q, _d: ("SELECT count(*) FROM dead_letters", ()),
    FaultLabels: _fault_labels_sql,
    RecentReadings: lambda q, d: (
        'SELECT station_id, ts, "values" FROM readings '
        f"ORDER BY ts DESC, station_id DESC, seq DESC LIMIT {d.mark}",
        (q.limit,),
    ),
    MinuteAggregates: lambda q, d: minute_aggregates_sql(q, d.mark),
    GlobalAnomalies: lambda q, d: global_anomalies_sql(q, d.mark),
    GlobalAnomalyRuns: lambda q, d: global_anomaly_runs_sql(q, d.mark),
    Checkpoints: lambda q, d: checkpoints_sql(q, d.mark),
    Alarms: lambda q, d: alarms_sql(q, d.mark),
    AlarmHistory: lambda q, d: alarm_history_sql(q, d.mark),
    AlarmTransitions: lambda q, d: alarm_transitions_sql(q, d.mark),
    TransitionFeed: lambda q, d: transition_feed_sql(q, d.mark),
}


def _station_page(q: StationReadings, rows: list[tuple[Any, ...]]) -> ReadingPage:
    page = [decode_reading(*row) for row in rows[: q.limit]]
    more = len(rows) > q.limit
    return ReadingPage(rows=page, next_cursor=(page[-1].ts, page[-1].seq) if more else None)


def _recent(q: RecentReadings, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    rows.reverse()
    return recent_frame(
        [r[0] for r in rows], [r[1] for r in rows], [json.loads(r[2]) for r in rows], q.sensors
    )


_RESULTS: dict[type[Any], Callable[[Any, list[tuple[Any, ...]]], Any]] = {
    LatestAnomalies: lambda _q, rows: [decode_reading(*row) for row in rows],
    AnomalyCount: lambda _q, rows: rows[0][0],
    StationReadings: _station_page,
    Stations: lambda _q, rows: [
        StationSummary(
            station_id=station,
            last_ts=ts,
            last_received_at=received,
            last_values=json.loads(values),
            last_is_anomaly=bool(anomaly),
            readings=readings,
            anomalies=anomalies,
        )
        for station, ts, received, values, anomaly, readings, anomalies in rows
    ],
    DeadLetters: lambda _q, rows: [DeadLetterRow(*row) for row in rows],
    DeadLetterCount: lambda _q, rows: rows[0][0],
    FaultLabels: lambda _q, rows: [FaultLabel(*row) for row in rows],
    RecentReadings: _recent,
    MinuteAggregates: lambda _q, rows: aggregate_frame(rows),
    GlobalAnomalies: lambda _q, rows: [global_anomaly(row) for row in rows],
    GlobalAnomalyRuns: lambda _q, rows: [global_anomaly_run(run_from_sql(row)) for row in rows],
    Checkpoints: lambda _q, rows: [checkpoint(row) for row in rows],
    Alarms: alarm_page,
    AlarmHistory: lambda _q, rows: [recorded_transition(row) for row in rows],
    AlarmTransitions: lambda _q, rows: [recorded_transition(row).transition for row in rows],
    TransitionFeed: lambda _q, rows: [recorded_transition(row) for row in rows],
}
