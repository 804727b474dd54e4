"""The store contract: every backend, through the Store protocol only."""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from faultline.schema import TS, FaultLabel
from faultline.store import (
    AnomalyCount,
    DeadLetterCount,
    DeadLetters,
    FaultLabels,
    LatestAnomalies,
    Query,
    ReadingRow,
    RecentReadings,
    StationReadings,
    Stations,
    Store,
    StoreError,
)
from faultline.store.base import LAST_MS
from tests.contract.batches import DETECTORS, SENSORS, T0, dead_letter, reading_frame, write_batch

EVERYTHING = (0, LAST_MS)


def all_readings(store: Store, station_id: str) -> list[ReadingRow]:
    rows: list[ReadingRow] = []
    after = None
    while True:
        page = store.query(StationReadings(station_id, *EVERYTHING, limit=1000, after=after))
        rows.extend(page.rows)
        if page.next_cursor is None:
            return rows
        after = page.next_cursor


def snapshot(store: Store) -> tuple[object, ...]:
    """Everything observable about a store, to compare before and after a write."""
    stations = store.query(Stations())
    return (
        stations,
        {s.station_id: all_readings(store, s.station_id) for s in stations},
        store.query(AnomalyCount(*EVERYTHING)),
        store.query(LatestAnomalies(limit=1000)),
        store.query(DeadLetters(limit=1000)),
        store.query(DeadLetterCount()),
        store.query(FaultLabels(*EVERYTHING)),
    )


def test_a_new_store_is_empty(store: Store) -> None:
    assert store.query(Stations()) == []
    assert store.query(LatestAnomalies()) == []
    assert store.query(AnomalyCount(*EVERYTHING)) == 0
    page = store.query(StationReadings("s-1", *EVERYTHING))
    assert page.rows == [] and page.next_cursor is None
    assert store.query(DeadLetters()) == []
    assert store.query(DeadLetterCount()) == 0
    assert store.query(FaultLabels(*EVERYTHING)) == []
    recent = store.query(RecentReadings(sensors=SENSORS))
    assert list(recent.columns) == ["station_id", "ts", *SENSORS] and recent.empty
    store.ping()


def test_write_then_read_every_field(store: Store) -> None:
    frame = reading_frame(
        ["s-1", "s-1", "s-2"],
        [T0, T0 + 1000, T0 + 500],
        seq=[7, 8, 3],
        values=[[25.5, 60.25, 50.0], [26.0, 61.0, 0.1 + 0.2], [24.0, 59.0, 49.0]],
        sensor_mask=[0, 0b101, 0],
        scores=[[0.25, np.nan], [0.95, 7.5], [0.5, np.inf]],
        received_at=[T0 + 10, T0 + 1010, T0 + 520],
        ts_assigned=[False, True, False],
        model_version="iforest@3",
    )
    store.write(write_batch(frame, processed_at=T0 + 2000))

    rows = store.query(StationReadings("s-1", *EVERYTHING)).rows
    assert rows == [
        ReadingRow(
            station_id="s-1",
            ts=T0,
            seq=7,
            ts_assigned=False,
            received_at=T0 + 10,
            processed_at=T0 + 2000,
            values={"temperature": 25.5, "humidity": 60.25, "noise_level": 50.0},
            is_anomaly=False,
            scores={"iforest": 0.25, "robust": None},
            sensors=[],
            model_version="iforest@3",
        ),
        ReadingRow(
            station_id="s-1",
            ts=T0 + 1000,
            seq=8,
            ts_assigned=True,
            received_at=T0 + 1010,
            processed_at=T0 + 2000,
            values={"temperature": 26.0, "humidity": 61.0, "noise_level": 0.1 + 0.2},
            is_anomaly=True,
            scores={"iforest": 0.95, "robust": 7.5},
            sensors=["temperature", "noise_level"],
            model_version="iforest@3",
        ),
    ]
    (other,) = store.query(StationReadings("s-2", *EVERYTHING)).rows
    assert other.scores == {"iforest": 0.5, "robust": math.inf}
    assert store.query(LatestAnomalies()) == [rows[1]]
    assert store.query(AnomalyCount(*EVERYTHING)) == 1


def test_station_summaries_hold_the_newest_reading_and_counts(store: Store) -> None:
    frame = reading_frame(
        ["b", "a", "b", "b", "a"],
        [T0 + 3000, T0, T0 + 3000, T0 + 1000, T0 + 5000],
        seq=[1, 0, 2, 0, 0],
        sensor_mask=[1, 0, 0, 2, 0],
    )
    store.write(write_batch(frame))

    a, b = store.query(Stations())
    assert (a.station_id, a.last_ts, a.readings, a.anomalies) == ("a", T0 + 5000, 2, 0)
    # Two readings share b's newest ts; the higher seq is the newer.
    assert (b.station_id, b.last_ts, b.readings, b.anomalies) == ("b", T0 + 3000, 3, 2)
    assert b.last_is_anomaly is False
    assert b.last_received_at == T0 + 3050
    expected = frame.iloc[2]
    assert b.last_values == {name: expected[name] for name in SENSORS}


def test_replaying_a_batch_changes_nothing(store: Store) -> None:
    batch = write_batch(
        reading_frame(
            ["s-1"] * 50 + ["s-2"] * 50,
            [T0 + i * 1000 for i in range(50)] * 2,
            sensor_mask=[1 if i % 10 == 0 else 0 for i in range(100)],
        ),
        dead_letters=[dead_letter(1), dead_letter(2)],
        faults=[FaultLabel("s-1", "temperature", "spike", T0, T0 + 5000)],
    )
    store.write(batch)
    before = snapshot(store)

    store.write(batch)

    assert snapshot(store) == before
    assert [s.readings for s in store.query(Stations())] == [50, 50]
    assert store.query(AnomalyCount(*EVERYTHING)) == 10
    assert store.query(DeadLetterCount()) == 2


def test_an_overlapping_replay_adds_only_the_new_readings(store: Store) -> None:
    ts = [T0 + i * 1000 for i in range(150)]
    masks = [1 if i % 7 == 0 else 0 for i in range(150)]
    store.write(write_batch(reading_frame("s-1", ts[:100], sensor_mask=masks[:100])))

    store.write(write_batch(reading_frame("s-1", ts[50:], sensor_mask=masks[50:])))

    rows = all_readings(store, "s-1")
    assert [r.ts for r in rows] == ts
    (summary,) = store.query(Stations())
    assert summary.readings == 150
    assert summary.anomalies == sum(m != 0 for m in masks) == store.query(AnomalyCount(*EVERYTHING))
    assert summary.last_ts == ts[-1]


def test_a_repeated_key_within_a_batch_keeps_the_first_reading(store: Store) -> None:
    frame = reading_frame(
        "s-1",
        [T0, T0, T0 + 1000],
        seq=[1, 1, 2],
        values=[[20.0, 50.0, 40.0], [99.0, 99.0, 99.0], [21.0, 51.0, 41.0]],
        sensor_mask=[0, 1, 0],
    )
    store.write(write_batch(frame))

    rows = all_readings(store, "s-1")
    assert [(r.ts, r.seq, r.values["temperature"]) for r in rows] == [
        (T0, 1, 20.0),
        (T0 + 1000, 2, 21.0),
    ]
    (summary,) = store.query(Stations())
    assert (summary.readings, summary.anomalies) == (2, 0)


def test_an_older_batch_does_not_move_the_latest_reading_back(store: Store) -> None:
    store.write(write_batch(reading_frame("s-1", [T0 + 10_000], values=[[30.0, 70.0, 60.0]])))

    store.write(write_batch(reading_frame("s-1", [T0, T0 + 5000], sensor_mask=[1, 0])))

    (summary,) = store.query(Stations())
    assert summary.last_ts == T0 + 10_000
    assert summary.last_values == {"temperature": 30.0, "humidity": 70.0, "noise_level": 60.0}
    assert (summary.readings, summary.anomalies) == (3, 1)


def test_a_batch_with_a_bad_reading_stores_nothing(store: Store) -> None:
    store.write(write_batch(reading_frame("s-1", [T0])))
    before = snapshot(store)
    frame = reading_frame(["s-1", "s-2"], [T0 + 1000, T0 + 2000])
    frame.loc[1, "humidity"] = math.inf

    with pytest.raises(StoreError, match="humidity"):
        store.write(write_batch(frame, dead_letters=[dead_letter(1)]))

    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("column", "bad", "message"),
    [
        ("ts", ["yesterday", "today"], "'ts' must hold integers"),
        ("station_id", [None, "s-2"], "'station_id' must hold strings"),
        ("is_anomaly", [0.5, 1.5], "'is_anomaly' must hold booleans"),
        ("temperature", ["warm", "cold"], "'temperature' must hold numbers"),
        ("sensor_mask", [0, 0b1000], "sensor_mask 0b1000 names sensors beyond"),
    ],
)
def test_a_malformed_readings_frame_is_refused_with_the_column_named(
    store: Store, column: str, bad: list[object], message: str
) -> None:
    frame = reading_frame(["s-1", "s-2"], [T0, T0 + 1000])
    frame[column] = pd.Series(bad, dtype=object if column != "sensor_mask" else np.int64)

    with pytest.raises(StoreError, match=message):
        store.write(write_batch(frame))

    assert store.query(Stations()) == []


def test_a_batch_missing_columns_is_refused(store: Store) -> None:
    frame = reading_frame("s-1", [T0]).drop(columns=["humidity", "score_robust"])

    with pytest.raises(StoreError, match="lacks columns: humidity, score_robust"):
        store.write(write_batch(frame))


def test_station_readings_pages_lose_and_repeat_nothing(store: Store) -> None:
    # Several readings share a ts (different seq) so cursors must break ties by seq.
    ts = [T0 + (i // 3) * 1000 for i in range(2500)]
    seq = list(range(2500))
    store.write(write_batch(reading_frame("s-1", ts, seq=seq)))
    store.write(write_batch(reading_frame("s-2", ts[:10], seq=seq[:10])))

    for limit in (1, 7, 1000, 2500, 5000):
        keys: list[tuple[int, int]] = []
        after = None
        pages = 0
        while True:
            page = store.query(StationReadings("s-1", *EVERYTHING, limit=limit, after=after))
            pages += 1
            assert len(page.rows) <= limit
            keys.extend((r.ts, r.seq) for r in page.rows)
            if page.next_cursor is None:
                break
            assert page.next_cursor == keys[-1]
            after = page.next_cursor
        assert keys == list(zip(ts, seq, strict=True))
        assert pages == math.ceil(2500 / limit)


def test_station_readings_cursor_and_range_combine(store: Store) -> None:
    ts = [T0 + i * 1000 for i in range(20)]
    store.write(write_batch(reading_frame("s-1", ts)))

    # A cursor before the range start: the range start wins.
    page = store.query(StationReadings("s-1", ts[5], ts[10], after=(ts[1], 0)))
    assert [r.ts for r in page.rows] == ts[5:10]
    page = store.query(StationReadings("s-1", ts[5], ts[10], limit=2, after=(ts[6], ts[6] // 1000)))
    assert [r.ts for r in page.rows] == ts[7:9]
    assert page.next_cursor == (ts[8], ts[8] // 1000)
    page = store.query(StationReadings("s-1", ts[5], ts[10], limit=2, after=page.next_cursor))
    assert [r.ts for r in page.rows] == ts[9:10] and page.next_cursor is None


def test_ranges_include_their_start_and_exclude_their_end(store: Store) -> None:
    ts = [T0 + i * 1000 for i in range(10)]
    store.write(write_batch(reading_frame("s-1", ts, sensor_mask=[1] * 10)))

    page = store.query(StationReadings("s-1", ts[2], ts[6]))
    assert [r.ts for r in page.rows] == ts[2:6]
    assert store.query(AnomalyCount(ts[2], ts[6])) == 4
    assert store.query(AnomalyCount(ts[2], ts[2])) == 0
    assert store.query(AnomalyCount(ts[6], ts[2])) == 0
    assert store.query(StationReadings("s-1", ts[2], ts[2] + 1)).rows[0].ts == ts[2]
    assert store.query(StationReadings("s-1", ts[2] + 1, ts[3])).rows == []


def test_anomaly_count_counts_only_anomalies(store: Store) -> None:
    masks = [0, 1, 0, 2, 4, 0, 0, 1]
    stations = ["a", "b"] * 4
    store.write(write_batch(reading_frame(stations, [T0 + i for i in range(8)], sensor_mask=masks)))

    assert store.query(AnomalyCount(T0, T0 + 8)) == 4
    assert store.query(AnomalyCount(T0 + 4, T0 + 8)) == 2


def test_latest_anomalies_newest_first_limited_and_filtered(store: Store) -> None:
    n = 30
    stations = [f"s-{i % 3}" for i in range(n)]
    ts = [T0 + ((i * 7919) % n) * 1000 for i in range(n)]  # a shuffled order of event times
    masks = [1 if i % 2 else 0 for i in range(n)]
    store.write(write_batch(reading_frame(stations, ts, sensor_mask=masks)))
    anomalous = sorted(
        ((t, s) for t, s, m in zip(ts, stations, masks, strict=True) if m), reverse=True
    )

    latest = store.query(LatestAnomalies(limit=5))
    assert [(r.ts, r.station_id) for r in latest] == anomalous[:5]
    assert all(r.is_anomaly for r in latest)
    assert len(store.query(LatestAnomalies(limit=1000))) == len(anomalous)

    only_s1 = store.query(LatestAnomalies(limit=3, station_id="s-1"))
    assert [(r.ts, r.station_id) for r in only_s1] == [a for a in anomalous if a[1] == "s-1"][:3]
    assert store.query(LatestAnomalies(station_id="nowhere")) == []


def test_fault_labels_overlap_the_range(store: Store) -> None:
    labels = [
        FaultLabel("s-1", "temperature", "spike", T0, T0 + 999),  # ends just before the range
        FaultLabel("s-1", "humidity", "drift", T0, T0 + 1000),  # ends on the range start
        FaultLabel("s-2", "*", "dropout", T0 + 1500, T0 + 1600),  # inside
        FaultLabel("s-1", "noise_level", "stuck", T0 + 500, T0 + 9000),  # spans the range
        FaultLabel("s-2", "temperature", "shift", T0 + 2000, T0 + 3000),  # starts on range end
        FaultLabel("s-3", "temperature", "variance", T0 + 1999, T0 + 1999),  # instant, inside
    ]
    store.write(write_batch(faults=labels))

    found = store.query(FaultLabels(T0 + 1000, T0 + 2000))
    assert found == [labels[1], labels[3], labels[2], labels[5]]
    assert store.query(FaultLabels(T0 + 1000, T0 + 2000, station_id="s-2")) == [labels[2]]


def test_writing_a_fault_label_again_extends_it(store: Store) -> None:
    label = FaultLabel("s-1", "temperature", "drift", T0, T0 + 1000)
    store.write(write_batch(faults=[label]))

    store.write(write_batch(faults=[replace(label, end_ts=T0 + 5000)]))
    store.write(write_batch(faults=[label]))

    assert store.query(FaultLabels(*EVERYTHING)) == [replace(label, end_ts=T0 + 5000)]


def test_dead_letters_newest_first_unique_by_source(store: Store) -> None:
    letters = [dead_letter(n, received_at=T0 + (n % 4) * 1000) for n in range(10)]
    store.write(write_batch(dead_letters=letters[:6]))
    store.write(write_batch(dead_letters=letters[4:]))

    rows = store.query(DeadLetters(limit=100))
    assert store.query(DeadLetterCount()) == len(rows) == 10
    assert len({r.id for r in rows}) == 10
    assert [r.received_at for r in rows] == sorted((d.received_at for d in letters), reverse=True)
    # Equal received_at: the later stored comes first.
    for newer, older in itertools.pairwise(rows):
        if newer.received_at == older.received_at:
            assert newer.id > older.id
    by_source = {r.source: r for r in rows}
    for letter in letters:
        row = by_source[letter.source]
        assert (row.payload, row.reason, row.kind) == (letter.payload, letter.reason, letter.kind)
    assert [r.source for r in store.query(DeadLetters(limit=3))] == [r.source for r in rows[:3]]


def test_a_dead_letter_without_a_byte_payload_is_refused(store: Store) -> None:
    bad = replace(dead_letter(1), payload="text")  # type: ignore[arg-type]

    with pytest.raises(StoreError, match="payload"):
        store.write(write_batch(reading_frame("s-1", [T0]), dead_letters=[bad]))

    assert store.query(Stations()) == []


def test_recent_readings_are_the_newest_oldest_first(store: Store) -> None:
    ts = [T0 + i * 1000 for i in range(20)]
    values = [[20.0 + i, 50.0 + i, 40.0 + i] for i in range(20)]
    values[-1][1] = math.nan
    store.write(write_batch(reading_frame(["a", "b"] * 10, ts, values=values)))

    recent = store.query(RecentReadings(limit=5, sensors=("humidity", "temperature")))
    assert list(recent.columns) == ["station_id", "ts", "humidity", "temperature"]
    assert recent[TS].tolist() == ts[-5:]
    assert recent["station_id"].tolist() == ["b", "a", "b", "a", "b"]
    assert recent["temperature"].tolist() == [v[0] for v in values[-5:]]
    assert recent["humidity"].tolist()[:4] == [v[1] for v in values[-5:-1]]
    assert math.isnan(recent["humidity"].iloc[-1])
    assert recent[TS].dtype == np.int64 and recent["humidity"].dtype == np.float64

    every = store.query(RecentReadings(limit=3))
    assert list(every.columns) == ["station_id", "ts", *SENSORS]


def test_missing_sensors_are_left_out_of_values(store: Store) -> None:
    values = [[25.0, math.nan, 50.0], [math.nan, math.nan, 51.0], [26.0, 61.0, 52.0]]
    store.write(write_batch(reading_frame("s-1", [T0, T0 + 1, T0 + 2], values=values)))

    rows = all_readings(store, "s-1")
    assert [r.values for r in rows] == [
        {"temperature": 25.0, "noise_level": 50.0},
        {"noise_level": 51.0},
        {"temperature": 26.0, "humidity": 61.0, "noise_level": 52.0},
    ]
    only_noise = store.query(RecentReadings(limit=2, sensors=()))
    first_seen = ["noise_level", "temperature", "humidity"]
    assert list(only_noise.columns) == ["station_id", "ts", *first_seen]


def test_the_sensor_set_comes_from_the_batch(store: Store) -> None:
    sensors = ("vibration", "pressure", "current", "temperature")
    frame = reading_frame(
        "press-4",
        [T0],
        values=[[0.5, 101.3, 12.0, 40.0]],
        sensor_mask=[0b1010],
        sensors=sensors,
        detectors=("robust",),
        scores=[[9.0]],
    )
    store.write(write_batch(frame, sensors=sensors, detectors=("robust",)))

    (row,) = store.query(LatestAnomalies())
    assert row.values == {"vibration": 0.5, "pressure": 101.3, "current": 12.0, "temperature": 40.0}
    assert row.sensors == ["pressure", "temperature"]
    assert row.scores == {"robust": 9.0}


@pytest.mark.parametrize(
    "station_id",
    [
        "站点-七",
        "émetteur ñ",
        "🛰️ orbit",
        "x'); DROP TABLE readings;--",
        'quote"d',
        "tab\tnew\nline",
    ],
)
def test_odd_station_ids_round_trip(store: Store, station_id: str) -> None:
    store.write(write_batch(reading_frame([station_id, "plain"], [T0, T0], sensor_mask=[1, 1])))

    assert [r.station_id for r in all_readings(store, station_id)] == [station_id]
    assert {s.station_id for s in store.query(Stations())} == {station_id, "plain"}
    assert store.query(LatestAnomalies(station_id=station_id))[0].station_id == station_id


def test_a_batch_of_only_dead_letters_may_carry_an_empty_frame(store: Store) -> None:
    store.write(write_batch(pd.DataFrame(), dead_letters=[dead_letter(1)]))

    assert store.query(DeadLetterCount()) == 1
    assert store.query(Stations()) == []


def test_a_large_batch(store: Store) -> None:
    n = 50_000
    stations = [f"s-{i % 25:02d}" for i in range(n)]
    ts = [T0 + (i // 25) * 1000 for i in range(n)]
    masks = [1 if i % 1000 == 0 else 0 for i in range(n)]
    store.write(write_batch(reading_frame(stations, ts, sensor_mask=masks)))

    summaries = store.query(Stations())
    assert len(summaries) == 25
    assert sum(s.readings for s in summaries) == n
    assert store.query(AnomalyCount(*EVERYTHING)) == 50
    assert len(all_readings(store, "s-07")) == n // 25
    assert len(store.query(RecentReadings(limit=5000))) == 5000


def test_one_writer_and_many_readers_at_once(store: Store) -> None:
    """Readers see whole batches only: station counts move in steps of one batch."""
    per_batch, batches = 40, 30
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for b in range(batches):
                ts = [T0 + (b * per_batch + i) * 1000 for i in range(per_batch)]
                store.write(write_batch(reading_frame("s-1", ts, sensor_mask=[1] + [0] * 39)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            seen = 0
            while True:
                finished = done.is_set()
                summaries = store.query(Stations())
                count = summaries[0].readings if summaries else 0
                assert count % per_batch == 0 and count >= seen
                seen = count
                assert store.query(AnomalyCount(*EVERYTHING)) >= count // per_batch
                store.query(LatestAnomalies(limit=5))
                if finished:
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert store.query(Stations())[0].readings == per_batch * batches


def test_an_unknown_query_is_a_type_error(store: Store) -> None:
    class Nonsense(Query[int]):
        pass

    with pytest.raises(TypeError, match="Nonsense"):
        store.query(Nonsense())


def test_a_closed_store_refuses_everything(store: Store) -> None:
    store.close()

    with pytest.raises(StoreError, match="closed"):
        store.query(Stations())
    with pytest.raises(StoreError, match="closed"):
        store.write(write_batch(reading_frame("s-1", [T0])))
    with pytest.raises(StoreError):
        store.ping()
    store.close()


def test_detectors_and_sensors_need_unique_names(store: Store) -> None:
    frame = reading_frame("s-1", [T0])
    with pytest.raises(StoreError, match="detectors must be unique"):
        store.write(write_batch(frame, detectors=(*DETECTORS, DETECTORS[0])))
