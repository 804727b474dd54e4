"""The SQLite store serves the aggregate queries, and counts anomalies, from its indexes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from faultline.schema import GlobalAnomaly
from faultline.store import (
    AnomalyCount,
    GlobalAnomalies,
    GlobalAnomalyRuns,
    MinuteAggregates,
    Query,
    SqliteStore,
)
from tests.contract.batches import T0, reading_frame, write_batch

DAY = date(2026, 1, 1)


@pytest.mark.parametrize(
    ("q", "index"),
    [
        (MinuteAggregates(T0, T0 + 3_600_000), "USING INDEX minute_aggregates_by_minute"),
        (MinuteAggregates(T0, T0 + 3_600_000, sensor="humidity"), "minute_aggregates_by_minute"),
        (MinuteAggregates(T0, T0 + 3_600_000, station_id="s-1"), "USING PRIMARY KEY"),
        (GlobalAnomalies(DAY), "USING PRIMARY KEY (day>? AND day<?)"),
        (GlobalAnomalies(DAY, station_id="s-1"), "USING INDEX global_anomalies_by_station"),
        (GlobalAnomalyRuns(DAY, date(2026, 2, 1)), "USING INTEGER PRIMARY KEY (rowid>? AND"),
    ],
    ids=repr,
)
def test_aggregate_queries_search_an_index(tmp_path: Path, q: Query[object], index: str) -> None:
    store = SqliteStore(tmp_path / "plans.db")
    stations = [f"s-{i % 5}" for i in range(600)]
    found = [
        GlobalAnomaly(DAY, s, "humidity", T0 + i * 60_000, 1.0, 0.0, 9.0)
        for i, s in enumerate(sorted(set(stations)))
    ]
    store.write(
        write_batch(
            reading_frame(stations, [T0 + i * 1000 for i in range(600)]), global_anomalies=found
        )
    )

    plan = store.explain(q)

    store.close()
    assert len(plan) == 1 and plan[0].startswith("SEARCH") and index in plan[0], plan


DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T0 - 30 * DAY_MS + 1_234, T0 + 5_678),  # 30 days, a partial minute at each end
        (T0 - 30 * DAY_MS, T0),  # 30 whole days
    ],
)
def test_a_30_day_anomaly_count_sums_minutes_and_reads_no_readings_but_the_ends(
    tmp_path: Path, start: int, end: int
) -> None:
    """The whole minutes come from anomaly_minutes by its key; readings are read only through
    the partial index of anomalies, and only for the partial minutes at the ends: a plan that
    counts a 30-day range in the readings (or their index) has no anomaly_minutes step, or a
    third readings step."""
    store = SqliteStore(tmp_path / "plans.db")
    ts = [start + i * 7_919 for i in range(600)]
    store.write(write_batch(reading_frame("s-1", ts, sensor_mask=[i % 3 for i in range(600)])))

    plan = store.explain(AnomalyCount(start, end))

    store.close()
    # The parts' sum is a row of scalar subqueries: leave those steps out, keep the reads.
    steps = [step for step in plan if not step.startswith(("SCALAR SUBQUERY", "SCAN CONSTANT"))]
    edges = 0 if (start % 60_000, end % 60_000) == (0, 0) else 2
    assert steps == [
        "SEARCH anomaly_minutes USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
        *["SEARCH readings USING COVERING INDEX anomalies_by_time (ts>? AND ts<?)"] * edges,
    ], plan
