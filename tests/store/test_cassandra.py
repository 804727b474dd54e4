"""Cassandra specifics: the URL, replication and consistency, migrations, racing writers,
half-finished writes, day boundaries, and statements that never filter or scan.

Runs against the node in FAULTLINE_TEST_CASSANDRA (scripts/services/svc.py); without one it
skips, or fails when CI=true. The URL tests need no server.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace

import pytest
from cassandra import ConsistencyLevel, OperationTimedOut
from cassandra.cluster import Session

from faultline.schema import Checkpoint, FaultLabel
from faultline.store import (
    AnomalyCount,
    Checkpoints,
    DeadLetters,
    FaultLabels,
    GlobalAnomalies,
    GlobalAnomalyRuns,
    LatestAnomalies,
    Stations,
    StoreError,
    open_store,
)
from faultline.store import cassandra as cassandra_module
from faultline.store.base import LAST_MS
from faultline.store.cassandra import CassandraStore
from faultline.store.cassandra_schema import MIGRATIONS, SCHEMA_VERSION, migrate, parse_url
from faultline.store.columns import global_anomaly_rows
from tests.contract.batches import T0, dead_letter, reading_frame, write_batch
from tests.contract.test_aggregate_contract import DAY0, anomaly
from tests.contract.test_global_anomaly_run_contract import STARTED, run_of
from tests.store.migrated import assert_old_anomalies_kept_and_a_rerun_replaces_them
from tests.store.multiday import DAY, assert_agrees_with_memory
from tests.store.servers import (
    cassandra_keyspace,
    cassandra_session,
    cassandra_store,
    cassandra_url,
    refused_port,
)

__all__ = ["cassandra_keyspace"]  # the fixture the stores here live in


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[CassandraStore]:
    opened = cassandra_store(request)
    yield opened
    opened.close()


# The URL


def test_the_url_defaults() -> None:
    options = parse_url("cassandra://db1/faultline")

    assert (options.hosts, options.port, options.keyspace) == (("db1",), 9042, "faultline")
    assert options.consistency == ConsistencyLevel.LOCAL_QUORUM
    assert options.serial_consistency == ConsistencyLevel.LOCAL_SERIAL
    assert (options.replication, options.timeout_s) == (1, 10.0)


def test_the_url_names_hosts_consistency_replication_and_timeout() -> None:
    options = parse_url(
        "cassandra://10.0.0.1:19042,10.0.0.2:19042/plant_7?consistency=quorum&replication=3"
        "&timeout=2.5"
    )

    assert options.hosts == ("10.0.0.1", "10.0.0.2") and options.port == 19042
    assert options.consistency == ConsistencyLevel.QUORUM
    assert options.serial_consistency == ConsistencyLevel.SERIAL
    assert (options.replication, options.timeout_s) == (3, 2.5)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("cassandra:///faultline", "write cassandra://HOST"),
        ("cassandra://db1", "must name a keyspace"),
        ("cassandra://db1/2fast", "must name a keyspace"),
        ("cassandra://db1/has-dash", "must name a keyspace"),
        ("cassandra://db1:port/faultline", "'db1:port' is not HOST or HOST:PORT"),
        ("cassandra://db1:9042,db2:9043/faultline", "every host must use the same port"),
        ("cassandra://db1/faultline?consistency=MOST", "consistency must be one of ALL, ANY"),
        ("cassandra://db1/faultline?consistency=SERIAL", "consistency must be one of"),
        ("cassandra://db1/faultline?replication=0", "replication must be a positive number"),
        ("cassandra://db1/faultline?replication=two", "replication must be a positive number"),
        ("cassandra://db1/faultline?timeout=-1", "timeout must be a positive number"),
        ("cassandra://db1/faultline?consistancy=ONE", r"unknown options \['consistancy'\]"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_no_statement_filters_or_scans_a_table() -> None:
    """Without ALLOW FILTERING Cassandra refuses a SELECT that does not name a whole partition
    key, except one without WHERE, which reads the whole table: there are none of either."""
    statements = [*cassandra_module._CQL.values(), *(s for m in MIGRATIONS for s in m)]
    assert not [s for s in statements if "ALLOW FILTERING" in s.upper()]
    selects = [s for s in cassandra_module._CQL.values() if s.startswith("SELECT")]
    assert selects and all(" WHERE " in s for s in selects)


# The server


def test_open_store_opens_a_cassandra_url(cassandra_keyspace: str) -> None:
    store = open_store(cassandra_url(cassandra_keyspace))
    assert isinstance(store, CassandraStore)
    store.ping()
    store.close()


def test_replication_and_consistency_come_from_the_url(cassandra_keyspace: str) -> None:
    """A keyspace replicated 3 times on a single node: ONE can read, but no lightweight
    transaction can gather a quorum of replicas, and QUORUM cannot even read."""
    keyspace = f"{cassandra_keyspace}_rf3"
    try:
        store = CassandraStore(cassandra_url(keyspace, "replication=3&consistency=ONE"))
        with cassandra_session() as session:
            replication = session.execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                (keyspace,),
            ).one()[0]
        assert replication["replication_factor"] == "3"
        assert store.query(Stations()) == []
        with pytest.raises(StoreError, match=r"Unavailable|Cannot achieve consistency"):
            store.write(write_batch(reading_frame("s-1", [T0])))
        store.close()

        with pytest.raises(StoreError, match=r"Unavailable|Cannot achieve consistency"):
            CassandraStore(cassandra_url(keyspace, "replication=3&consistency=QUORUM"))
    finally:
        with cassandra_session() as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)


def test_a_rerun_too_large_for_one_batch_still_replaces_the_day(
    store: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cassandra_module, "_GLOBAL_ANOMALY_ROWS", 2)
    first = [anomaly(s, "temperature", T0) for s in ("a", "b", "c", "d", "e")]
    store.write(write_batch(global_anomalies=first, global_anomaly_run=run_of(DAY0, first)))
    assert store.query(GlobalAnomalies(DAY0)) == first

    found = [anomaly(s, "humidity", T0 + 60_000) for s in ("b", "x", "y")]
    rerun = run_of(DAY0, found, started=STARTED + timedelta(hours=1))
    store.write(write_batch(global_anomalies=found, global_anomaly_run=rerun))

    assert store.query(GlobalAnomalies(DAY0)) == found
    assert store.query(GlobalAnomalyRuns(DAY0)) == [rerun]


def test_a_rerun_wins_over_a_run_whose_clock_was_ahead(
    store: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run's host clock was an hour ahead, so its cells carry later write timestamps
    than the rerun's clock gives: the rerun still replaces them."""
    ahead = time.time_ns() + 3600 * 10**9
    monkeypatch.setattr(cassandra_module, "time", SimpleNamespace(time_ns=lambda: ahead))
    first = [anomaly("a", "temperature", T0)]
    store.write(write_batch(global_anomalies=first, global_anomaly_run=run_of(DAY0, first)))
    monkeypatch.undo()

    found = [anomaly("b", "temperature", T0)]
    rerun = run_of(DAY0, found, started=STARTED + timedelta(hours=1))
    store.write(write_batch(global_anomalies=found, global_anomaly_run=rerun))

    assert store.query(GlobalAnomalies(DAY0)) == found
    assert store.query(GlobalAnomalyRuns(DAY0)) == [rerun]


def test_a_second_version_keyspace_keeps_its_global_anomalies_and_gains_run_records(
    cassandra_keyspace: str,
) -> None:
    """A keyspace an older Faultline left at version 2, its global anomalies written by the
    statements that version used, is migrated when a store opens it."""
    keyspace = f"{cassandra_keyspace}_v2"
    found = [anomaly("a", "temperature", T0), anomaly("b", "humidity", T0)]
    try:
        with cassandra_session() as session:
            migrate(session, parse_url(cassandra_url(keyspace)), to=2)
            add = {
                name: session.prepare(cassandra_module._CQL[name].format(ks=keyspace))
                for name in ("add_bucket", "add_global_anomaly")
            }
            for row in global_anomaly_rows(found):
                session.execute(add["add_bucket"], ("global_anomalies", "", row[0]))
                session.execute(add["add_global_anomaly"], row)
            assert not run_columns(session, keyspace)

        assert_old_anomalies_kept_and_a_rerun_replaces_them(
            CassandraStore(cassandra_url(keyspace)), found
        )
        with cassandra_session() as session:
            assert len(run_columns(session, keyspace)) == 7
            version = f"SELECT version FROM {keyspace}.schema_version WHERE part = 0"
            assert session.execute(version).one() == (SCHEMA_VERSION,)
    finally:
        with cassandra_session() as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)


def run_columns(session: Session, keyspace: str) -> list[str]:
    """The run-record columns (migration 3) of the keyspace's global_anomalies table."""
    rows = session.execute(
        "SELECT column_name FROM system_schema.columns "
        "WHERE keyspace_name = %s AND table_name = 'global_anomalies'",
        (keyspace,),
    )
    return [name for (name,) in rows if name.startswith("run_")]


def test_a_keyspace_from_a_newer_faultline_is_refused(
    store: CassandraStore, cassandra_keyspace: str
) -> None:
    with cassandra_session() as session:
        update = f"UPDATE {cassandra_keyspace}.schema_version SET version = %s WHERE part = 0"
        session.execute(update, (SCHEMA_VERSION + 1,))
        try:
            with pytest.raises(StoreError, match="newer than this Faultline knows"):
                CassandraStore(cassandra_url(cassandra_keyspace))
        finally:
            session.execute(update, (SCHEMA_VERSION,))


def test_an_unreachable_node_is_a_store_error() -> None:
    with (
        refused_port() as port,
        pytest.raises(StoreError, match=f"cannot open cassandra://127.0.0.1:{port}/nowhere"),
    ):
        CassandraStore(f"cassandra://127.0.0.1:{port}/nowhere?timeout=2")


def test_a_host_that_does_not_resolve_is_a_store_error() -> None:
    with pytest.raises(StoreError, match=r"cannot open cassandra://no-such-host\.invalid"):
        CassandraStore("cassandra://no-such-host.invalid/faultline?timeout=2")


def test_racing_writers_store_and_count_every_reading_once(
    store: CassandraStore, cassandra_keyspace: str
) -> None:
    """Four stores write the same two partitions at once, each its own order of small batches
    overlapping by half: the conditional batches make the losers re-read, so nothing counts
    twice."""
    stores = [store, *(CassandraStore(cassandra_url(cassandra_keyspace)) for _ in range(3))]
    ts = [T0 + k * 1000 for k in range(800)]
    masks = [1 if k % 5 == 0 else 0 for k in range(800)]
    frame = reading_frame(["s-1", "s-2"] * 400, ts, sensor_mask=masks)
    batches = [
        write_batch(frame.iloc[k : k + 40].reset_index(drop=True)) for k in range(0, 800, 20)
    ]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(writer: CassandraStore, seed: int) -> None:
        order = list(range(len(batches)))
        random.Random(seed).shuffle(order)
        try:
            start.wait()
            for k in order:
                writer.write(batches[k])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    summaries = store.query(Stations())
    assert [(s.station_id, s.readings) for s in summaries] == [("s-1", 400), ("s-2", 400)]
    assert sum(s.anomalies for s in summaries) == sum(masks)
    assert store.query(AnomalyCount(0, LAST_MS)) == sum(masks)
    for other in stores[1:]:
        other.close()


def test_a_write_landing_between_the_reads_of_another_counts_once(
    store: CassandraStore, cassandra_keyspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer commits the same readings just after this one read the first of a
    partition's count and keys: whichever order the reads take, nothing may count twice."""
    other = CassandraStore(cassandra_url(cassandra_keyspace))
    batch = write_batch(reading_frame("s-1", [T0 + k * 1000 for k in range(10)]))
    run = store._run
    interrupted: list[str] = []

    def run_then_interrupt(name: str, *args: object, **kwargs: object) -> object:
        result = run(name, *args, **kwargs)
        if name in ("partition_count", "keys_in_range") and not interrupted:
            interrupted.append(name)
            other.write(batch)
        return result

    monkeypatch.setattr(store, "_run", run_then_interrupt)
    store.write(batch)

    assert interrupted
    (summary,) = store.query(Stations())
    assert (summary.readings, summary.last_ts) == (10, T0 + 9000)
    other.close()


def test_dead_letter_ids_stay_unique_between_writers(
    store: CassandraStore, cassandra_keyspace: str
) -> None:
    other = CassandraStore(cassandra_url(cassandra_keyspace))
    start = threading.Barrier(2)

    def write(writer: CassandraStore, first: int) -> None:
        start.wait()
        for k in range(first, first + 40, 4):
            writer.write(write_batch(dead_letters=[dead_letter(n) for n in range(k, k + 6)]))

    threads = [threading.Thread(target=write, args=(s, f)) for s, f in ((store, 0), (other, 20))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    rows = store.query(DeadLetters(limit=1000))
    assert len(rows) == len({r.source for r in rows}) == 62  # letters 0 to 61
    assert len({r.id for r in rows}) == 62
    other.close()


def test_a_write_that_fails_halfway_is_completed_by_its_replay(
    store: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node times out after the anomaly rows went in but before the readings did: the write
    fails, the anomaly shows until the engine replays the batch, and the replay completes it
    with every count exact."""
    batch = write_batch(reading_frame("s-1", [T0, T0 + 1000, T0 + 2000], sensor_mask=[0, 1, 0]))

    def time_out(*_args: object) -> None:
        raise OperationTimedOut("no answer in time")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_commit_readings", time_out)
        with pytest.raises(StoreError, match="part of the batch may be stored"):
            store.write(batch)
    assert store.query(Stations()) == []
    assert [r.ts for r in store.query(LatestAnomalies())] == [T0 + 1000]

    store.write(batch)
    store.write(batch)

    (summary,) = store.query(Stations())
    assert (summary.readings, summary.anomalies, summary.last_ts) == (3, 1, T0 + 2000)
    assert store.query(AnomalyCount(0, LAST_MS)) == 1


def test_long_fault_labels_are_found_in_any_day_they_cover(store: CassandraStore) -> None:
    week = FaultLabel("s-1", "temperature", "drift", T0, T0 + 7 * DAY)
    growing = FaultLabel("s-2", "humidity", "stuck", T0 + 1000, T0 + 2000)
    store.write(write_batch(faults=[week, growing]))
    later = T0 + 5 * DAY

    assert store.query(FaultLabels(later, later + 1)) == [week]

    longer = FaultLabel("s-2", "humidity", "stuck", T0 + 1000, T0 + 6 * DAY)
    store.write(write_batch(faults=[longer]))
    store.write(write_batch(faults=[growing]))  # an older, shorter copy changes nothing

    assert store.query(FaultLabels(later, later + 1)) == [week, longer]
    assert store.query(FaultLabels(T0, T0 + 1001)) == [week, longer]


def test_agrees_with_the_memory_store_across_days(store: CassandraStore) -> None:
    assert_agrees_with_memory(store)


def test_a_checkpoint_is_written_only_after_the_rest_of_its_batch(
    store: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No transaction spans a batch's partitions, so the checkpoint goes last: a write failing
    on the readings leaves the previous checkpoint, never one covering unstored readings."""
    older = replace(write_batch(), checkpoints=(Checkpoint("g", "t", 0, 5, b"old", T0),))
    store.write(older)
    batch = replace(
        write_batch(reading_frame("s-1", [T0, T0 + 1000])),
        checkpoints=(Checkpoint("g", "t", 0, 7, b"new", T0 + 1),),
    )

    def time_out(*_args: object) -> None:
        raise OperationTimedOut("no answer in time")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_commit_readings", time_out)
        with pytest.raises(StoreError, match="part of the batch may be stored"):
            store.write(batch)
    assert store.query(Checkpoints("g", "t")) == list(older.checkpoints)

    store.write(batch)  # the engine's retry
    assert store.query(Checkpoints("g", "t")) == list(batch.checkpoints)
    assert store.query(Stations())[0].readings == 2
