"""The store contract for 1-minute aggregates and global anomalies, on every backend."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from faultline.schema import FaultLabel, GlobalAnomaly
from faultline.store import (
    GlobalAnomalies,
    MinuteAggregates,
    Stations,
    Store,
    StoreError,
)
from faultline.store.aggregate import AGGREGATE_COLUMNS, MINUTE_MS, minute_partials
from tests.contract.batches import SENSORS, T0, reading_frame, write_batch
from tests.contract.test_store_contract import EVERYTHING, snapshot

DAY0 = date(2026, 1, 1)  # the day T0 starts
DAY_MS = 86_400_000


def everything(store: Store) -> pd.DataFrame:
    return store.query(MinuteAggregates(*EVERYTHING))


def expected(frame: pd.DataFrame) -> pd.DataFrame:
    """What the aggregates of exactly the readings of `frame` are (first of a repeated key)."""
    unique = frame.drop_duplicates(["station_id", "ts", "seq"])
    partials = minute_partials(unique, SENSORS)
    partials["mean"] = partials["sum"] / partials["count"]
    return partials


def assert_aggregates(actual: pd.DataFrame, wanted: pd.DataFrame) -> None:
    assert list(actual.columns) == list(AGGREGATE_COLUMNS)
    pd.testing.assert_frame_equal(
        actual.reset_index(drop=True), wanted.reset_index(drop=True), check_exact=False, rtol=1e-12
    )


def spread(n: int, start: int = T0, step_ms: int = 7_000) -> list[int]:
    return [start + i * step_ms for i in range(n)]


def test_aggregates_of_one_batch(store: Store) -> None:
    values = [
        [20.0, 50.0, math.nan],  # minute 0
        [22.0, 54.0, math.nan],
        [30.0, math.nan, 41.0],  # minute 1
    ]
    frame = reading_frame("s-1", [T0, T0 + 59_999, T0 + 60_000], values=values)
    store.write(write_batch(frame))

    got = everything(store)
    assert list(got.columns) == list(AGGREGATE_COLUMNS)
    rows = [tuple(r) for r in got.itertuples(index=False)]
    assert rows == [
        ("s-1", "humidity", T0, 2, 104.0, 50.0, 54.0, 52.0),
        ("s-1", "noise_level", T0 + MINUTE_MS, 1, 41.0, 41.0, 41.0, 41.0),
        ("s-1", "temperature", T0, 2, 42.0, 20.0, 22.0, 21.0),
        ("s-1", "temperature", T0 + MINUTE_MS, 1, 30.0, 30.0, 30.0, 30.0),
    ]
    dtypes = got.dtypes.astype(str).tolist()
    assert dtypes == ["object", "object", "int64", "int64", *["float64"] * 4]


def test_a_new_store_has_no_aggregates(store: Store) -> None:
    got = everything(store)
    assert got.empty and list(got.columns) == list(AGGREGATE_COLUMNS)
    assert store.query(GlobalAnomalies(DAY0)) == []


def test_a_replayed_batch_is_not_counted_twice(store: Store) -> None:
    frame = reading_frame(["s-1", "s-2"] * 60, spread(120, step_ms=1500))
    batch = write_batch(frame)
    store.write(batch)
    first = everything(store)

    store.write(batch)

    assert_aggregates(everything(store), first)
    assert_aggregates(first, expected(frame))


def test_an_overlapping_replay_adds_only_the_new_readings(store: Store) -> None:
    frame = reading_frame("s-1", spread(150, step_ms=2500))
    store.write(write_batch(frame.iloc[:100].reset_index(drop=True)))

    store.write(write_batch(frame.iloc[50:].reset_index(drop=True)))

    assert_aggregates(everything(store), expected(frame))
    assert store.query(Stations())[0].readings == 150


def test_batches_merge_into_the_same_minute(store: Store) -> None:
    low = reading_frame("s-1", [T0 + 1000, T0 + 2000], values=[[10.0, 40.0, 30.0]] * 2)
    high = reading_frame("s-1", [T0 + 3000], values=[[90.0, 80.0, 70.0]], seq=[99])
    store.write(write_batch(low))
    store.write(write_batch(high))

    got = store.query(MinuteAggregates(*EVERYTHING, sensor="temperature"))
    assert [tuple(r) for r in got.itertuples(index=False)] == [
        ("s-1", "temperature", T0, 3, 110.0, 10.0, 90.0, 110.0 / 3)
    ]


def test_a_repeated_key_within_a_batch_is_counted_once(store: Store) -> None:
    frame = reading_frame(
        "s-1", [T0, T0, T0 + 1000], seq=[1, 1, 2], values=[[20.0] * 3, [99.0] * 3, [22.0] * 3]
    )
    store.write(write_batch(frame))

    got = store.query(MinuteAggregates(*EVERYTHING, sensor="humidity"))
    assert [tuple(r) for r in got.itertuples(index=False)] == [
        ("s-1", "humidity", T0, 2, 42.0, 20.0, 22.0, 21.0)
    ]


def test_minute_ranges_include_their_start_and_exclude_their_end(store: Store) -> None:
    # Ten minutes of two stations, straddling a midnight (stores may split by day).
    midnight = T0 + DAY_MS
    ts = spread(40, start=midnight - 5 * MINUTE_MS, step_ms=15_000)
    frame = reading_frame(["a", "b"] * 20, ts)
    store.write(write_batch(frame))
    whole = expected(frame)

    def minutes(q: MinuteAggregates) -> list[tuple[str, str, int]]:
        return [(r.station_id, r.sensor, r.minute) for r in store.query(q).itertuples()]

    start, end = midnight - 2 * MINUTE_MS, midnight + 3 * MINUTE_MS
    inside = whole[(whole["minute"] >= start) & (whole["minute"] < end)]
    assert minutes(MinuteAggregates(start, end)) == [
        (r.station_id, r.sensor, r.minute) for r in inside.itertuples()
    ]
    # A minute belongs to the range its start is in.
    assert {m for _, _, m in minutes(MinuteAggregates(start + 1, end + 1))} == {
        start + k * MINUTE_MS for k in range(1, 6)
    }
    assert minutes(MinuteAggregates(start, start)) == []
    assert minutes(MinuteAggregates(end, start)) == []
    only_b = minutes(MinuteAggregates(start, end, station_id="b", sensor="noise_level"))
    assert only_b == [("b", "noise_level", start + k * MINUTE_MS) for k in range(5)]
    assert {s for s, _, _ in minutes(MinuteAggregates(start, end, station_id="b"))} == {"b"}
    assert minutes(MinuteAggregates(start, end, station_id="nowhere")) == []
    assert minutes(MinuteAggregates(start, end, sensor="pressure")) == []


def test_a_partition_larger_than_a_write_chunk(store: Store) -> None:
    """1200 readings of one station and day: stores that write in chunks carry the aggregates
    from chunk to chunk."""
    frame = reading_frame("s-1", spread(1200, step_ms=100), values=np.arange(3600.0).reshape(-1, 3))
    store.write(write_batch(frame))

    assert_aggregates(everything(store), expected(frame))


def test_a_failed_batch_adds_no_aggregates(store: Store) -> None:
    store.write(write_batch(reading_frame("s-1", [T0])))
    before = (snapshot(store), everything(store))
    batch = write_batch(
        reading_frame("s-1", [T0 + 1000, T0 + 2000]),
        faults=[FaultLabel("s-1", "humidity", "drift", T0 + 5000, T0 + 4000)],
    )

    with pytest.raises(StoreError):
        store.write(batch)

    after = (snapshot(store), everything(store))
    assert after[0] == before[0]
    assert_aggregates(after[1], before[1])


def test_racing_writers_of_the_same_readings_count_each_once(store: Store) -> None:
    frame = reading_frame(["s-1", "s-2", "s-3"] * 200, spread(600, step_ms=400))
    halves = [frame.iloc[:400], frame.iloc[200:], frame.iloc[100:500], frame]
    errors: list[BaseException] = []

    def write(part: pd.DataFrame) -> None:
        try:
            store.write(write_batch(part.reset_index(drop=True)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(part,)) for part in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert_aggregates(everything(store), expected(frame))


def anomaly(station: str, sensor: str, minute: int, day: date = DAY0) -> GlobalAnomaly:
    return GlobalAnomaly(day, station, sensor, minute, 40.0, 25.0, 7.5)


def test_global_anomalies_by_day_range_and_station(store: Store) -> None:
    day1 = date(2026, 1, 2)
    found = [
        anomaly("b", "temperature", T0 + 5 * MINUTE_MS),
        anomaly("a", "temperature", T0 + 9 * MINUTE_MS),
        anomaly("a", "humidity", T0 + 9 * MINUTE_MS),
        anomaly("a", "humidity", T0 + MINUTE_MS),
        anomaly("a", "humidity", T0 + DAY_MS, day=day1),
    ]
    store.write(write_batch(global_anomalies=found))

    assert store.query(GlobalAnomalies(DAY0)) == [found[3], found[2], found[1], found[0]]
    assert store.query(GlobalAnomalies(DAY0, day1, station_id="a")) == [
        found[3],
        found[2],
        found[1],
        found[4],
    ]
    assert store.query(GlobalAnomalies(day1)) == [found[4]]
    assert store.query(GlobalAnomalies(day1, DAY0)) == []
    assert store.query(GlobalAnomalies(date(2025, 12, 31))) == []
    assert store.query(GlobalAnomalies(DAY0, station_id="nowhere")) == []


def test_global_anomalies_are_keyed_so_a_rerun_replaces_and_a_replay_adds_nothing(
    store: Store,
) -> None:
    first = anomaly("a", "temperature", T0)
    batch = write_batch(global_anomalies=[first])
    store.write(batch)
    store.write(batch)
    assert store.query(GlobalAnomalies(DAY0)) == [first]

    rerun = replace(first, value=41.5, expected=24.0, score=9.25)
    store.write(write_batch(global_anomalies=[rerun]))

    assert store.query(GlobalAnomalies(DAY0)) == [rerun]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (anomaly("a", "temperature", T0 - 1), "not in its day 2026-01-01"),
        (anomaly("a", "temperature", T0 + DAY_MS), "not in its day"),
        (replace(anomaly("a", "temperature", T0), score=math.nan), "must be finite"),
        (replace(anomaly("a", "temperature", T0), value=math.inf), "must be finite"),
    ],
)
def test_a_bad_global_anomaly_stores_nothing(
    store: Store, bad: GlobalAnomaly, message: str
) -> None:
    batch = write_batch(
        reading_frame("s-1", [T0]), global_anomalies=[anomaly("b", "humidity", T0), bad]
    )

    with pytest.raises(StoreError, match=message):
        store.write(batch)

    assert store.query(Stations()) == []
    assert everything(store).empty
    assert store.query(GlobalAnomalies(DAY0)) == []


def test_a_global_anomaly_twice_in_one_batch_is_refused(store: Store) -> None:
    twice = [anomaly("a", "temperature", T0), replace(anomaly("a", "temperature", T0), score=9.0)]

    with pytest.raises(StoreError, match="appears twice"):
        store.write(write_batch(global_anomalies=twice))

    assert store.query(GlobalAnomalies(DAY0)) == []
