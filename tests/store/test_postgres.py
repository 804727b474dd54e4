"""PostgreSQL specifics: partitioning, query plans, migrations, lost connections, day boundaries.

Runs against the server in FAULTLINE_TEST_POSTGRES (scripts/services/svc.py); without one it
skips, or fails when CI=true. Every test works in a schema of its own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import psycopg
import pytest

from faultline.alarm_schema import ANOMALY, AlarmKey
from faultline.schema import FaultLabel
from faultline.store import (
    AlarmHistory,
    Alarms,
    AlarmTransitions,
    AnomalyCount,
    DeadLetterCount,
    DeadLetters,
    FaultLabels,
    LatestAnomalies,
    Query,
    RecentReadings,
    StationReadings,
    Stations,
    StoreError,
    TransitionFeed,
    open_store,
)
from faultline.store import postgres as postgres_module
from faultline.store.postgres import DAY_MS, NATIVE, SCHEMA_VERSION, TIMESCALEDB, PostgresStore
from tests.contract.alarms import (
    KEY,
    Race,
    alarm_batch,
    all_alarms,
    race_two_writers,
    raised,
    replay_at_once,
)
from tests.contract.batches import T0, dead_letter, reading_frame, write_batch
from tests.contract.test_aggregate_contract import anomaly
from tests.store.migrated import assert_old_anomalies_kept_and_a_rerun_replaces_them
from tests.store.multiday import assert_agrees_with_memory
from tests.store.servers import postgres_schema, postgres_url, refused_port

__all__ = ["postgres_schema"]  # the fixture every test here uses


@pytest.fixture
def url(postgres_schema: str) -> str:
    """The test's schema, its connections named after it to find them in pg_stat_activity."""
    return f"{postgres_url(postgres_schema)}&application_name={postgres_schema}"


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(url)
    yield opened
    opened.close()


def admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of its own into the test's schema."""
    return psycopg.connect(url, autocommit=True)


def fill(store: PostgresStore, days: int = 3, stations: int = 25) -> None:
    """Readings every 5 minutes per station over `days` days, one in 500 anomalous."""
    n = days * 288 * stations
    store.write(
        write_batch(
            reading_frame(
                [f"s-{i % stations}" for i in range(n)],
                [T0 + (i // stations) * 300_000 for i in range(n)],
                sensor_mask=[1 if i % 500 == 0 else 0 for i in range(n)],
            ),
            dead_letters=[dead_letter(k) for k in range(30)],
            faults=[
                FaultLabel("s-1", "temperature", "spike", T0 + k * 60_000, T0 + k * 60_000 + 500)
                for k in range(40)
            ],
        )
    )


def test_open_store_opens_a_postgres_url(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    store.ping()
    store.close()


def test_readings_are_split_by_day_as_the_server_allows(store: PostgresStore, url: str) -> None:
    fill(store, days=3)
    with admin(url) as conn:
        offered = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if store.partitioning == NATIVE:
            partitions = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"
            ).fetchall()
            days = sorted({(T0 + k * 300_000) // DAY_MS for k in range(3 * 288)})
            assert [name for (name,) in partitions] == [f"readings_{d}" for d in days]
            bounds = conn.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = %s",
                (f"readings_{days[0]}",),
            ).fetchone()
            assert bounds == (
                f"FOR VALUES FROM ('{days[0] * DAY_MS}') TO ('{(days[0] + 1) * DAY_MS}')",
            )
        else:
            assert store.partitioning == TIMESCALEDB and offered is not None
            chunks = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'readings' AND hypertable_schema = current_schema()"
            ).fetchone()
            assert chunks == (3,)
    # A server without the extension cannot have been given hypertables.
    assert offered is not None or store.partitioning == NATIVE


@pytest.mark.parametrize(
    "q",
    [
        LatestAnomalies(limit=10),
        LatestAnomalies(limit=10, station_id="s-1"),
        AnomalyCount(T0 + DAY_MS, T0 + 2 * DAY_MS),
        AnomalyCount(T0 + 1, T0 + 3 * DAY_MS - 1),  # partial minutes at the ends too
        StationReadings("s-1", T0, T0 + 3 * DAY_MS),
        StationReadings("s-1", T0, T0 + 3 * DAY_MS, after=(T0 + DAY_MS, 5)),
        Stations(),
        DeadLetters(limit=10),
        DeadLetterCount(),
        FaultLabels(T0, T0 + 120_000),
        RecentReadings(limit=100),
    ],
    ids=lambda q: type(q).__name__,
)
def test_every_query_is_served_by_an_index(
    store: PostgresStore, url: str, q: Query[object]
) -> None:
    """With sequential scans and sorts priced out, a plan still holding one has no index that
    serves the query (an incremental sort of rows an index already orders by start is fine)."""
    fill(store)
    with admin(url) as conn:
        conn.execute("ANALYZE")

    plan = "\n".join(store.explain(q, "enable_seqscan = off", "enable_sort = off"))

    assert "Seq Scan" not in plan
    assert not re.search(r"(^|->)\s*Sort\s+\(", plan, re.MULTILINE), plan


def test_a_time_range_reads_only_its_days(store: PostgresStore) -> None:
    fill(store, days=3)
    day = (T0 + DAY_MS) // DAY_MS

    # Not on minute boundaries: the partial minutes at the ends are read from the readings.
    plan = "\n".join(store.explain(AnomalyCount(day * DAY_MS + 1, (day + 1) * DAY_MS - 1)))

    if store.partitioning == NATIVE:
        # The tables scanned ("on ..."), not their aliases (readings_1: the second reference).
        assert set(re.findall(r" on (readings_\d+)", plan)) == {f"readings_{day}"}, plan


def test_reopening_keeps_the_data_and_the_schema_version(store: PostgresStore, url: str) -> None:
    fill(store, days=1)
    before = store.query(Stations())

    again = PostgresStore(url)

    assert again.query(Stations()) == before
    assert again.partitioning == store.partitioning
    again.close()
    with admin(url) as conn:
        assert conn.execute("SELECT version FROM faultline_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_a_second_version_schema_keeps_its_global_anomalies_and_gains_run_records(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = postgres_module.migrations
    monkeypatch.setattr(postgres_module, "migrations", lambda p: current(p)[:2])
    monkeypatch.setattr(postgres_module, "SCHEMA_VERSION", 2)
    old = PostgresStore(url)
    found = [anomaly("a", "temperature", T0), anomaly("b", "humidity", T0)]
    old.write(write_batch(global_anomalies=found))
    old.close()
    monkeypatch.undo()

    assert_old_anomalies_kept_and_a_rerun_replaces_them(PostgresStore(url), found)
    with admin(url) as conn:
        assert conn.execute("SELECT version FROM faultline_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_a_schema_from_a_newer_faultline_is_refused(store: PostgresStore, url: str) -> None:
    with admin(url) as conn:
        conn.execute("UPDATE faultline_schema SET version = %s", (SCHEMA_VERSION + 1,))

    with pytest.raises(StoreError, match="newer than this Faultline knows"):
        PostgresStore(url)


def test_stores_opening_a_new_schema_together_both_work(url: str) -> None:
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    for store in opened:
        store.close()


def test_writers_creating_the_same_days_at_once_count_every_reading_once(url: str) -> None:
    """Two stores write overlapping batches of days neither has seen: both create partitions
    and both insert; each reading is stored and counted once."""
    stores = [PostgresStore(url), PostgresStore(url)]
    ts = [T0 + 5 * DAY_MS + k * 3_600_000 for k in range(96)]
    batches = [write_batch(reading_frame("s-1", ts[k : k + 24])) for k in range(0, 96, 12)]
    errors: list[BaseException] = []

    def write(store: PostgresStore, order: list[int]) -> None:
        try:
            for k in order:
                store.write(batches[k])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(stores[0], list(range(len(batches))))),
        threading.Thread(target=write, args=(stores[1], list(reversed(range(len(batches)))))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    (summary,) = stores[0].query(Stations())
    assert summary.readings == len(ts) and summary.last_ts == ts[-1]
    for store in stores:
        store.close()


def test_lost_connections_fail_one_write_then_are_replaced(store: PostgresStore, url: str) -> None:
    store.write(write_batch(reading_frame("s-1", [T0])))
    store.query(Stations())
    with admin(url) as conn:  # as when the server restarts: every connection of the store ends
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = current_schema() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert len(killed) >= 2  # the writer and at least one reader

    with pytest.raises(StoreError, match="nothing was stored"):
        store.write(write_batch(reading_frame("s-1", [T0 + 1000])))
    store.write(write_batch(reading_frame("s-1", [T0 + 2000])))

    (summary,) = store.query(Stations())
    assert (summary.readings, summary.last_ts) == (2, T0 + 2000)


def test_an_unreachable_server_is_a_store_error() -> None:
    with (
        refused_port() as port,
        pytest.raises(StoreError, match=f"cannot connect to postgresql://127.0.0.1:{port}"),
    ):
        PostgresStore(f"postgresql://nobody:secret@127.0.0.1:{port}/faultline")


def test_a_malformed_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        PostgresStore("postgresql://127.0.0.1:5432/db?no_such_option=1")


def test_agrees_with_the_memory_store_across_days(store: PostgresStore) -> None:
    assert_agrees_with_memory(store)


@pytest.mark.parametrize(
    "q",
    [
        Alarms(),
        Alarms(after=(T0, KEY.id)),
        Alarms(state="active", min_severity="high", since_ms=T0),
        Alarms(state="shelved", now_ms=T0),
        Alarms(station_id="s-1"),
        Alarms(station_id="s-1", after=(T0, KEY.id)),
        AlarmHistory(KEY.id),
        AlarmTransitions(T0, T0 + 60_000),
        AlarmTransitions(T0, T0 + 60_000, actions=("raise", "clear")),
        TransitionFeed(),
        TransitionFeed(after=(T0, KEY.id)),
    ],
    ids=lambda q: type(q).__name__,
)
def test_every_alarm_query_is_served_by_an_index_in_its_order(
    store: PostgresStore, url: str, q: Query[object]
) -> None:
    alarms = tuple(AlarmKey(f"s-{i % 10}", f"sensor-{i}", ANOMALY) for i in range(40))
    race = Race(alarms=alarms, activations=3)
    for t in race.engine(race.alarms) + race.operator(0):
        store.write(alarm_batch(t))
    with admin(url) as conn:
        conn.execute("ANALYZE")
    store.query(q)

    plan = "\n".join(store.explain(q, "enable_seqscan = off", "enable_sort = off"))

    assert "Seq Scan" not in plan and "Sort" not in plan, plan
    assert "Index" in plan, plan


def test_a_fourth_version_schema_keeps_its_readings_and_gains_alarms(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = postgres_module.migrations
    monkeypatch.setattr(postgres_module, "migrations", lambda p: current(p)[:4])
    monkeypatch.setattr(postgres_module, "SCHEMA_VERSION", 4)
    old = PostgresStore(url)
    old.write(write_batch(reading_frame(["s-1"], [T0])))
    old.close()
    monkeypatch.undo()

    store = PostgresStore(url)
    try:
        store.write(alarm_batch(raised(KEY, T0)))
        assert [r.state.alarm for r in all_alarms(store)] == [KEY]
        assert [s.station_id for s in store.query(Stations())] == ["s-1"]
    finally:
        store.close()
    with admin(url) as conn:
        assert conn.execute("SELECT version FROM faultline_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_an_engine_and_an_api_process_writing_the_same_alarms_keep_both_parts(url: str) -> None:
    race_two_writers(PostgresStore(url), PostgresStore(url))


def test_two_writers_storing_the_same_transitions_at_once_store_each_once(url: str) -> None:
    """Replays racing (the second insert of a key waits for the first's commit, then adds
    nothing): no error, no deadlock, each transition once and the rows as if written once."""
    writers = [PostgresStore(url), PostgresStore(url)]
    try:
        replay_at_once(writers)
    finally:
        for w in writers:
            w.close()


def test_a_fifth_version_schema_gains_anomaly_counts_of_the_readings_it_holds(
    store: PostgresStore, url: str
) -> None:
    times = [T0 - 90_000 + 7_000 * i for i in range(40)]  # across several minutes and two days
    store.write(write_batch(reading_frame("s-1", times, sensor_mask=[i % 2 for i in range(40)])))
    with admin(url) as conn:  # as version 5 left it: the readings, no counts of their anomalies
        conn.execute("DROP TABLE anomaly_minutes")
        conn.execute("UPDATE faultline_schema SET version = 5")

    again = PostgresStore(url)
    try:
        assert again.query(AnomalyCount(T0 - 3_600_000, T0 + 3_600_000)) == 20
        assert again.query(AnomalyCount(T0 - 60_000, T0 + 120_000)) == sum(
            1 for i, ts in enumerate(times) if i % 2 and T0 - 60_000 <= ts < T0 + 120_000
        )
    finally:
        again.close()
