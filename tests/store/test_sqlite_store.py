"""SQLite specifics: query plans, pragmas, migrations, locking, rollback, closing."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from faultline.schema import Checkpoint, FaultLabel
from faultline.store import (
    AlarmHistory,
    Alarms,
    AlarmTransitions,
    AnomalyCount,
    Checkpoints,
    DeadLetterCount,
    DeadLetters,
    LatestAnomalies,
    Query,
    RecentReadings,
    SqliteStore,
    StationReadings,
    Stations,
    StoreError,
    TransitionFeed,
)
from faultline.store import sqlite as sqlite_module
from faultline.store.base import LAST_MS
from tests.contract.alarms import KEY, Race, alarm_batch, all_alarms, race_two_writers, raised
from tests.contract.batches import T0, dead_letter, reading_frame, write_batch
from tests.contract.test_aggregate_contract import anomaly
from tests.store.migrated import assert_old_anomalies_kept_and_a_rerun_replaces_them

N_STATIONS = 25


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "faultline.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(path)
    yield opened
    opened.close()


def fill(store: SqliteStore, n: int = 20_000) -> None:
    store.write(
        write_batch(
            reading_frame(
                [f"s-{i % N_STATIONS}" for i in range(n)],
                [T0 + (i // N_STATIONS) * 1000 for i in range(n)],
                sensor_mask=[1 if i % 500 == 0 else 0 for i in range(n)],
            )
        )
    )


@pytest.mark.parametrize(
    ("q", "index"),
    [
        (LatestAnomalies(limit=10), "USING INDEX anomalies_by_time"),
        (LatestAnomalies(limit=10, station_id="s-1"), "USING INDEX anomalies_by_station"),
        # Within one minute (longer ranges: tests/batch/test_sqlite_plans.py).
        (AnomalyCount(T0 + 1000, T0 + 30_000), "USING COVERING INDEX anomalies_by_time"),
        (StationReadings("s-1", T0, T0 + 60_000), "USING INDEX readings_by_station"),
        (
            StationReadings("s-1", T0, T0 + 60_000, after=(T0 + 5000, 5)),
            "USING INDEX readings_by_station (station_id=? AND (ts,seq)>(?,?)",
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Query) else "",
)
def test_reading_queries_are_served_from_an_index(
    store: SqliteStore, q: Query[object], index: str
) -> None:
    fill(store)
    store.query(q)

    plan = store.explain(q)

    assert len(plan) == 1 and index in plan[0], plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_recent_readings_walk_the_key_backwards_without_sorting(store: SqliteStore) -> None:
    fill(store)

    assert store.explain(RecentReadings(limit=100)) == ["SCAN readings"]


def test_the_file_is_in_wal_mode_at_the_latest_schema(store: SqliteStore, path: Path) -> None:
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = raw.execute("PRAGMA user_version").fetchone()[0]
    assert version == len(sqlite_module.MIGRATIONS)


def test_reopening_keeps_everything(path: Path) -> None:
    first = SqliteStore(path)
    fill(first, 1000)
    first.write(write_batch(dead_letters=[dead_letter(1)]))
    stations = first.query(Stations())
    first.close()

    again = SqliteStore(path)
    try:
        assert again.query(Stations()) == stations
        assert again.query(DeadLetterCount()) == 1
    finally:
        again.close()


def test_an_older_database_is_migrated_in_order(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(path).close()
    later = (
        *sqlite_module.MIGRATIONS,
        ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)",),
        ("ALTER TABLE notes ADD COLUMN author TEXT",),
    )
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", later)

    SqliteStore(path).close()

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(later)
        columns = [row[1] for row in raw.execute("PRAGMA table_info(notes)")]
    assert columns == ["id", "text", "author"]


def test_a_first_version_database_gains_dead_letter_kinds(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:1])
    SqliteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO dead_letters (received_at, source, reason, payload) "
            "VALUES (1, 'bus/0/1', 'malformed JSON', x'00')"
        )
    monkeypatch.undo()

    store = SqliteStore(path)
    try:
        (row,) = store.query(DeadLetters())
    finally:
        store.close()

    assert (row.source, row.kind, row.payload) == ("bus/0/1", "invalid", b"\x00")


def test_a_third_version_database_keeps_its_global_anomalies_and_gains_run_records(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:3])
    old = SqliteStore(path)
    found = [anomaly("a", "temperature", T0), anomaly("b", "humidity", T0)]
    old.write(write_batch(global_anomalies=found))
    old.close()
    monkeypatch.undo()

    assert_old_anomalies_kept_and_a_rerun_replaces_them(SqliteStore(path), found)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_module.MIGRATIONS)


def test_a_failing_migration_changes_nothing(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteStore(path).close()
    current = sqlite_module.MIGRATIONS
    broken = (*current, ("CREATE TABLE notes (id INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", broken)

    with pytest.raises(StoreError, match="syntax error"):
        SqliteStore(path)

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(current)
        assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchall() == []


def test_a_database_from_a_newer_faultline_is_refused(path: Path) -> None:
    SqliteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(sqlite_module.MIGRATIONS) + 1}")

    with pytest.raises(StoreError, match="newer than this Faultline"):
        SqliteStore(path)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.write_bytes(b"certainly not SQLite " * 100)

    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(path)


def test_a_backend_failure_mid_write_rolls_back_the_whole_batch(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters are inserted after the readings and the station rows; failing there must
    take those back."""
    monkeypatch.setattr(sqlite_module, "_ADD_DEAD_LETTER", "INSERT INTO no_such_table VALUES (?)")
    batch = write_batch(reading_frame("s-1", [T0, T0 + 1000]), dead_letters=[dead_letter(1)])

    with pytest.raises(StoreError, match="nothing was stored: no such table"):
        store.write(batch)

    assert store.query(Stations()) == []
    assert store.query(StationReadings("s-1", 0, LAST_MS)).rows == []
    monkeypatch.undo()
    store.write(batch)
    assert store.query(Stations())[0].readings == 2


class _Interrupted(BaseException):
    """Stands in for KeyboardInterrupt or SystemExit arriving in the middle of a write."""


class _Explosive(int):
    """Binding one to a statement raises _Interrupted (a valid int to every check before)."""


def _explode(_value: _Explosive) -> str:
    raise _Interrupted


def test_an_interrupted_write_rolls_back_and_the_store_goes_on(store: SqliteStore) -> None:
    sqlite3.register_adapter(_Explosive, _explode)
    # Fault labels are bound last, inside the transaction, after the readings went in.
    label = FaultLabel("s-1", "temperature", "spike", T0, _Explosive(T0 + 1))

    with pytest.raises(_Interrupted):
        store.write(write_batch(reading_frame("s-1", [T0]), faults=[label]))

    assert store.query(Stations()) == []
    store.write(write_batch(reading_frame("s-1", [T0])))
    assert store.query(Stations())[0].readings == 1


def test_a_held_write_lock_fails_a_write_after_the_busy_timeout(path: Path) -> None:
    store = SqliteStore(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.write(write_batch(reading_frame("s-1", [T0])))
        assert time.monotonic() - started >= 0.15
        # Readers are not blocked by a writer under WAL.
        assert store.query(Stations()) == []
        other.execute("ROLLBACK")
        store.write(write_batch(reading_frame("s-1", [T0])))
        assert store.query(Stations())[0].readings == 1
    finally:
        other.close()
        store.close()


def test_close_closes_every_connection(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, 1000)
    barrier = threading.Barrier(4)

    def read() -> None:
        barrier.wait()
        for _ in range(20):
            store.query(LatestAnomalies())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Path(f"{path}-wal").exists()

    store.close()

    # SQLite removes the WAL file when the last connection to the database closes.
    assert not Path(f"{path}-wal").exists()


def test_a_reader_busy_during_close_is_closed_when_it_finishes(path: Path) -> None:
    store = SqliteStore(path)
    with store._reader() as conn:
        store.close()
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    assert not Path(f"{path}-wal").exists()


def test_a_fourth_version_database_keeps_its_readings_and_gains_checkpoints(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:4])
    old = SqliteStore(path)
    old.write(write_batch(reading_frame(["s-1"], [T0])))
    old.close()
    monkeypatch.undo()

    store = SqliteStore(path)
    saved = Checkpoint("engine", "topic", 0, 1, b"state", T0)
    store.write(replace(write_batch(), checkpoints=(saved,)))
    assert store.query(Checkpoints("engine", "topic")) == [saved]
    assert [s.station_id for s in store.query(Stations())] == ["s-1"]
    store.close()


@pytest.mark.parametrize(
    ("q", "plan"),
    [
        (Alarms(), "SCAN alarms USING INDEX alarms_by_change"),
        (Alarms(after=(T0, KEY.id)), "SEARCH alarms USING INDEX alarms_by_change (changed_at<?)"),
        (
            Alarms(state="active", min_severity="high", since_ms=T0),
            "SEARCH alarms USING INDEX alarms_by_change (changed_at>?)",
        ),
        (Alarms(state="shelved", now_ms=T0), "SCAN alarms USING INDEX alarms_by_change"),
        (Alarms(station_id="s-1"), "SEARCH alarms USING INDEX alarms_by_station (station_id=?)"),
        (
            Alarms(station_id="s-1", after=(T0, KEY.id)),
            "SEARCH alarms USING INDEX alarms_by_station (station_id=? AND changed_at<?)",
        ),
        (
            AlarmHistory(KEY.id),
            "SEARCH alarm_transitions USING INDEX alarm_transitions_by_alarm (alarm_id=?)",
        ),
        (
            AlarmTransitions(T0, T0 + 60_000, actions=("raise", "clear")),
            "SEARCH alarm_transitions USING INDEX alarm_transitions_by_time (ts>? AND ts<?)",
        ),
        (TransitionFeed(), "SCAN alarm_transitions USING INDEX alarm_transitions_by_record"),
        (
            TransitionFeed(after=(T0, KEY.id)),
            "SEARCH alarm_transitions USING INDEX alarm_transitions_by_record "
            "((recorded_at,transition_key)>(?,?))",
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Query) else "",
)
def test_alarm_queries_are_served_from_an_index_in_their_order(
    store: SqliteStore, q: Query[object], plan: str
) -> None:
    race = Race(activations=3)
    for t in race.engine(race.alarms) + race.operator(0):
        store.write(alarm_batch(t))
    store.query(q)

    assert store.explain(q) == [plan]  # one step: no sort, no other table


def test_a_fifth_version_database_keeps_its_readings_and_gains_alarms(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:5])
    old = SqliteStore(path)
    old.write(write_batch(reading_frame(["s-1"], [T0])))
    old.close()
    monkeypatch.undo()

    store = SqliteStore(path)
    store.write(alarm_batch(raised(KEY, T0)))
    assert [r.state.alarm for r in all_alarms(store)] == [KEY]
    assert [s.station_id for s in store.query(Stations())] == ["s-1"]
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_module.MIGRATIONS)


def test_an_engine_and_an_api_process_writing_the_same_alarms_keep_both_parts(path: Path) -> None:
    race_two_writers(SqliteStore(path), SqliteStore(path))


def test_a_sixth_version_database_gains_anomaly_counts_of_the_readings_it_holds(
    path: Path,
) -> None:
    old = SqliteStore(path)
    times = [T0 - 90_000 + 7_000 * i for i in range(40)]  # across several minutes
    old.write(write_batch(reading_frame("s-1", times, sensor_mask=[i % 2 for i in range(40)])))
    old.close()
    # As version 6 left it: the readings, and no counts of their anomalies.
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE anomaly_minutes")
        raw.execute("PRAGMA user_version = 6")

    store = SqliteStore(path)
    assert store.query(AnomalyCount(T0 - 3_600_000, T0 + 3_600_000)) == 20
    assert store.query(AnomalyCount(T0 - 60_000, T0 + 120_000)) == sum(
        1 for i, ts in enumerate(times) if i % 2 and T0 - 60_000 <= ts < T0 + 120_000
    )
    store.close()
