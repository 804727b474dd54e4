"""The SQL of the aggregate queries and of the global-anomaly run records, the same for the
SQLite and PostgreSQL stores but for the parameter marker (`?` or `%s`)."""

from __future__ import annotations

import json
from typing import Any

from faultline.store.base import GlobalAnomalies, GlobalAnomalyRuns, MinuteAggregates
from faultline.store.columns import GlobalAnomalyRunRow, day_number

Sql = tuple[str, tuple[Any, ...]]


def minute_aggregates_sql(q: MinuteAggregates, mark: str) -> Sql:
    """Rows in faultline.store.aggregate.PARTIAL_COLUMNS order, unsorted."""
    where = [f"minute >= {mark}", f"minute < {mark}"]
    params: list[Any] = [q.start_ms, q.end_ms]
    for column, value in (("station_id", q.station_id), ("sensor", q.sensor)):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    return (
        "SELECT station_id, sensor, minute, count, sum, min, max FROM minute_aggregates "
        f"WHERE {' AND '.join(where)}",
        tuple(params),
    )


def global_anomalies_sql(q: GlobalAnomalies, mark: str) -> Sql:
    """Rows in faultline.store.columns.GlobalAnomalyRow order, sorted as the query promises."""
    first, last = (day_number(day) for day in q.days)
    params: tuple[Any, ...] = (first, last)
    station = ""
    if q.station_id is not None:
        station, params = f" AND station_id = {mark}", (*params, q.station_id)
    return (
        "SELECT day, station_id, sensor, minute, value, expected, score FROM global_anomalies "
        f"WHERE day >= {mark} AND day <= {mark}{station} ORDER BY day, station_id, sensor, minute",
        params,
    )


def global_anomaly_runs_sql(q: GlobalAnomalyRuns, mark: str) -> Sql:
    """Run records by day, as rows that run_from_sql takes."""
    first, last = (day_number(day) for day in q.days)
    return (
        "SELECT day, started_at, finished_at, status, series, skipped, anomalies, error "
        f"FROM global_anomaly_runs WHERE day >= {mark} AND day <= {mark} ORDER BY day",
        (first, last),
    )


def run_to_sql(run: GlobalAnomalyRunRow) -> tuple[Any, ...]:
    """A run record as the parameters of an insert in global_anomaly_runs_sql's column order
    (skip reasons as JSON text)."""
    day, started, finished, status, series, skipped, anomalies, error = run
    return (day, started, finished, status, series, json.dumps(skipped), anomalies, error)


def run_from_sql(row: tuple[Any, ...]) -> GlobalAnomalyRunRow:
    """A row of global_anomaly_runs_sql as a GlobalAnomalyRunRow."""
    day, started, finished, status, series, skipped, anomalies, error = row
    return (day, started, finished, status, series, json.loads(skipped), anomalies, error)
