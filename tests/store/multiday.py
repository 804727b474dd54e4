"""Data crossing several midnights, for stores that split their data by day.

The contract suite's data fits in one day; partitioned and bucketed stores must also page,
count and merge across day boundaries. `assert_agrees_with_memory` writes the same batches to a
store and to a MemoryStore (the reference) and compares every query across those boundaries.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from faultline.schema import FaultLabel, WriteBatch
from faultline.store import (
    AnomalyCount,
    DeadLetterCount,
    DeadLetters,
    FaultLabels,
    LatestAnomalies,
    MemoryStore,
    Query,
    RecentReadings,
    StationReadings,
    Stations,
    Store,
)
from faultline.store.base import LAST_MS
from tests.contract.batches import T0, dead_letter, reading_frame, write_batch

DAY = 86_400_000
STATIONS = ("s-1", "s-2", "s-3")


def multiday_batches() -> list[WriteBatch]:
    """Three stations reading every 17 minutes for five days from 22:00 before T0's midnight,
    one reading in nine anomalous, in batches that each cross a midnight; dead letters received
    over several days; fault labels short, crossing a midnight, and lasting days."""
    n = 5 * 24 * 60 // 17
    ts = [T0 - 2 * 3_600_000 + i * 17 * 60_000 for i in range(n) for _ in STATIONS]
    stations = [s for _ in range(n) for s in STATIONS]
    masks = [1 if i % 9 == 4 else 0 for i in range(len(ts))]
    frame = reading_frame(stations, ts, sensor_mask=masks)
    step = len(frame) // 4 + 1
    batches = [
        write_batch(frame.iloc[i : i + step].reset_index(drop=True))
        for i in range(0, len(frame), step)
    ]
    letters = [dead_letter(k, received_at=T0 + k * 7 * 3_600_000) for k in range(20)]
    faults = [
        FaultLabel("s-1", "temperature", "spike", T0 + 1000, T0 + 5000),
        FaultLabel("s-2", "humidity", "drift", T0 + DAY - 60_000, T0 + DAY + 60_000),
        FaultLabel("s-3", "*", "dropout", T0 + DAY // 2, T0 + 3 * DAY + 10),
        FaultLabel("s-1", "noise_level", "stuck", T0 - 3 * DAY, T0 + 4 * DAY),
    ]
    return [
        *batches,
        write_batch(dead_letters=letters[:12], faults=faults[:2]),
        write_batch(dead_letters=letters[8:], faults=faults[2:]),
    ]


QUERIES: list[Query[object]] = [
    Stations(),
    LatestAnomalies(limit=1000),
    LatestAnomalies(limit=40),
    LatestAnomalies(limit=30, station_id="s-2"),
    AnomalyCount(0, LAST_MS),
    AnomalyCount(T0 + DAY // 2, T0 + 3 * DAY + 17 * 60_000),
    AnomalyCount(T0 + DAY, T0 + 2 * DAY),
    DeadLetterCount(),
    FaultLabels(0, LAST_MS),
    FaultLabels(T0 + 2 * DAY, T0 + 2 * DAY + 1),
    FaultLabels(T0 + DAY + 30_000, T0 + DAY + 40_000, station_id="s-2"),
    FaultLabels(T0 + 5 * DAY, T0 + 6 * DAY),
]


def pages(store: Store, q: StationReadings) -> list[object]:
    out: list[object] = []
    while True:
        page = store.query(q)
        out.append(page)
        if page.next_cursor is None:
            return out
        q = StationReadings(q.station_id, q.start_ms, q.end_ms, q.limit, page.next_cursor)


def assert_agrees_with_memory(store: Store) -> None:
    memory = MemoryStore()
    for batch in multiday_batches():
        store.write(batch)
        memory.write(batch)
    for q in QUERIES:
        assert store.query(q) == memory.query(q), q
    for limit in (5, 1000):  # ids are only unique and increasing, so they may differ
        assert [replace(r, id=0) for r in store.query(DeadLetters(limit))] == [
            replace(r, id=0) for r in memory.query(DeadLetters(limit))
        ]
    for q in (
        StationReadings("s-1", 0, LAST_MS, limit=50),
        StationReadings("s-3", T0 + DAY - 3_600_000, T0 + 3 * DAY + 1, limit=33),
        StationReadings("s-2", T0 + 2 * DAY, T0 + 2 * DAY + 17 * 60_000),
    ):
        assert pages(store, q) == pages(memory, q), q
    for limit in (1, 100, 1000):
        pd.testing.assert_frame_equal(
            store.query(RecentReadings(limit=limit)), memory.query(RecentReadings(limit=limit))
        )
