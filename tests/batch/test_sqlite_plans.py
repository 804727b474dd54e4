"""The SQLite store serves the aggregate queries from its indexes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from faultline.schema import GlobalAnomaly
from faultline.store import (
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
