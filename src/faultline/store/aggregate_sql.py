"""The SQL of the aggregate queries, the same for the SQLite and PostgreSQL stores but for the
parameter marker (`?` or `%s`)."""

from __future__ import annotations

from typing import Any

from faultline.store.base import GlobalAnomalies, MinuteAggregates
from faultline.store.columns import day_number

Sql = tuple[str, tuple[Any, ...]]


def minute_aggregates_sql(q: MinuteAggregates, mark: str) -> Sql:
    """Rows in faultline.batch.aggregate.PARTIAL_COLUMNS order, unsorted."""
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
