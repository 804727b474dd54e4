"""The SQL of the aggregate queries and of the global-anomaly run records, the same for the
SQLite and PostgreSQL stores but for the parameter marker (`?` or `%s`).

`anomaly_minutes` holds, per minute, how many anomalous readings are stored with a `ts` in it,
added to in the transaction that inserts them (only readings actually inserted, like the other
aggregates). AnomalyCount sums its whole minutes and counts only the two partial minutes at the
ends of the range from the readings' partial index of anomalies: over 30 days that reads 43,200
small rows and at most two minutes of anomalies, where counting the index alone would read
every anomaly of the 30 days (bench/bench_queries.py).
"""

from __future__ import annotations

import json
from typing import Any

from faultline.store.aggregate import MINUTE_MS
from faultline.store.base import AnomalyCount, GlobalAnomalies, GlobalAnomalyRuns, MinuteAggregates
from faultline.store.columns import GlobalAnomalyRunRow, day_number

Sql = tuple[str, tuple[Any, ...]]


def anomaly_minutes_table(integer: str, suffix: str, anomalous: str) -> tuple[str, ...]:
    """The migration that adds anomaly_minutes and fills it from the readings stored before
    it (`anomalous`: the store's condition on anomalous readings)."""
    # `%` truncates toward zero in both dialects: the minute of a time before 1970 by hand.
    minute = f"ts - ((ts % {MINUTE_MS}) + {MINUTE_MS}) % {MINUTE_MS}"
    return (
        f"CREATE TABLE anomaly_minutes (minute {integer} PRIMARY KEY, "
        f"anomalies {integer} NOT NULL){suffix}",
        f"INSERT INTO anomaly_minutes (minute, anomalies) SELECT {minute}, count(*) "
        f"FROM readings WHERE {anomalous} GROUP BY {minute}",
    )


def anomaly_count_sql(q: AnomalyCount, mark: str, anomalous: str) -> Sql:
    """One row, one integer: the whole minutes of [start_ms, end_ms) from anomaly_minutes, the
    partial minutes at its ends counted in the readings (`anomalous` spelled as the partial
    index declares it, so that only that index is read). Empty parts are left out, so that a
    PostgreSQL plan touches no day partition it need not."""
    start, end = q.start_ms, q.end_ms
    first = -(-start // MINUTE_MS) * MINUTE_MS  # the first whole minute starts here
    last = end // MINUTE_MS * MINUTE_MS  # and the last one ends here
    parts: list[str] = []
    params: list[int] = []

    def count(lo: int, hi: int) -> None:
        if lo < hi:
            parts.append(
                f"SELECT count(*) FROM readings WHERE {anomalous} AND ts >= {mark} AND ts < {mark}"
            )
            params.extend((lo, hi))

    if first < last:
        parts.append(
            "SELECT CAST(coalesce(sum(anomalies), 0) AS BIGINT) FROM anomaly_minutes "
            f"WHERE minute >= {mark} AND minute < {mark}"
        )
        params.extend((first, last))
        count(start, first)
        count(last, end)
    else:  # less than a whole minute, or a partial one on either side of one boundary
        count(start, end)
    if len(parts) == 1:
        return parts[0], tuple(params)
    return f"SELECT {' + '.join(f'({part})' for part in parts) or '0'}", tuple(params)


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
