"""Cassandra's alarms: rows kept by write timestamps that are the memory store's whatever
order transitions arrive in, the first of two racing writes of a key deciding what every copy
of the log holds, and the migration that gives an older keyspace the alarm tables.

Runs against the node in FAULTLINE_TEST_CASSANDRA, like tests/store/test_cassandra.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from faultline.alarm_schema import AlarmKey, AlarmTransition
from faultline.store import (
    AlarmHistory,
    Alarms,
    AlarmTransitions,
    MemoryStore,
    RecordedTransition,
    TransitionFeed,
)
from faultline.store import cassandra as cassandra_module
from faultline.store.alarm_rows import history_order
from faultline.store.cassandra import CassandraStore
from faultline.store.cassandra_schema import SCHEMA_VERSION, migrate, parse_url
from tests.contract.alarms import (
    PROCESSED,
    alarm_batch,
    all_alarms,
    folded,
    race_two_writers,
    replay_at_once,
)
from tests.contract.batches import T0
from tests.store.servers import (
    cassandra_keyspace,
    cassandra_session,
    cassandra_store,
    cassandra_url,
)

__all__ = ["cassandra_keyspace"]  # the fixture the stores here live in

MINUTE = 60_000


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[CassandraStore]:
    opened = cassandra_store(request)
    yield opened
    opened.close()


def lifecycle(station_id: str) -> list[AlarmTransition]:
    """Two activations of one alarm with every kind of change, in the order they happened;
    the alarm ends cleared."""
    key = AlarmKey(station_id, "temperature", "anomaly")
    a, b = T0, T0 + 10 * MINUTE
    return [
        AlarmTransition(key, "raise", a, a, severity="medium", sensors=(("temperature", 0.75),)),
        AlarmTransition(
            key,
            "escalate",
            a + MINUTE,
            a,
            severity="high",
            sensors=(("humidity", 0.5),),
            detail="high",
        ),
        AlarmTransition(key, "ack", a + 2 * MINUTE, a, actor="ann"),
        AlarmTransition(
            key, "shelve", a + 3 * MINUTE, a, actor="ann", until=b + MINUTE, detail="3:ann"
        ),
        AlarmTransition(key, "comment", a + 3 * MINUTE, a, actor="bob", comment="on it"),
        # A clear and the next raise in the same millisecond: the clear comes first.
        AlarmTransition(key, "clear", b, a, severity="high", sensors=(("temperature", 0.9),)),
        AlarmTransition(key, "raise", b, b, severity="low", sensors=(("noise_level", 1.0),)),
        AlarmTransition(key, "unshelve", b + 2 * MINUTE, b, actor="bob", detail="12:bob"),
        # A clear keeps the severity and sensors of the raise, even when it arrives first.
        AlarmTransition(key, "clear", b + 3 * MINUTE, b, sensors=(("temperature", 1.0),)),
    ]


def test_rows_are_the_memory_stores_whatever_order_transitions_arrive_in(
    store: CassandraStore,
) -> None:
    """Each station's lifecycle is written one transition per batch, the first station's in
    order, the second's newest first, the others' in random orders, interleaved, every batch
    twice: the rows (kept by write timestamps here, under a lock there) are the memory
    store's, and the first station's is its history folded."""
    rng = random.Random(10)
    stations = [f"s-{n}" for n in range(24)]
    assert len({cassandra_module._shard(s) for s in stations}) > 1  # rows in several partitions
    orders = [lifecycle(stations[0]), lifecycle(stations[1])[::-1]]
    orders += [rng.sample(lifecycle(s), len(lifecycle(s))) for s in stations[2:]]
    batches = [[alarm_batch(t) for t in order * 2] for order in orders]
    reference = MemoryStore()
    while any(batches):
        pending = rng.choice([b for b in batches if b])
        batch = pending.pop(0)
        for s in (store, reference):
            s.write(batch)

    rows = all_alarms(store)
    assert rows == all_alarms(reference) and len(rows) == len(stations)
    first = lifecycle(stations[0])[0].alarm
    history = store.query(AlarmHistory(first.id))
    assert [r for r in rows if r.state.alarm == first] == [folded(first, history)]
    assert [r.transition for r in history] == sorted(lifecycle(stations[0]), key=history_order)


class _Interleaved:
    """Runs `then` once, right before the store first runs statement `name`."""

    def __init__(self, store: CassandraStore, name: str, then: Callable[[], None]) -> None:
        self.run, self.name, self.then = store._run, name, then
        self.ran = False

    def __call__(self, name: str, rows: Any, **options: Any) -> Any:
        if name == self.name and not self.ran:
            self.ran = True
            self.then()
        return self.run(name, rows, **options)


def test_of_two_writers_racing_with_one_key_the_first_to_store_it_wins_everywhere(
    store: CassandraStore, cassandra_keyspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's write has looked the key up and found nothing when Ana's (the same key: one ack
    per activation) stores everything; Bob's then finds the key taken when it comes to store
    it, and writes Ana's transition and time wherever it writes."""
    raised, *_ = lifecycle("s-1")
    store.write(alarm_batch(raised))
    ana = AlarmTransition(raised.alarm, "ack", T0 + 20, T0, actor="ana")
    bob = replace(ana, ts=T0 + 30, actor="bob")
    other = CassandraStore(cassandra_url(cassandra_keyspace))
    try:
        race = _Interleaved(
            store,
            "first_alarm_log",
            lambda: other.write(alarm_batch(ana, processed_at=PROCESSED + 1)),
        )
        monkeypatch.setattr(store, "_run", race)
        store.write(alarm_batch(bob, processed_at=PROCESSED + 2))
    finally:
        other.close()

    assert race.ran
    history = store.query(AlarmHistory(raised.alarm.id))
    first = RecordedTransition(ana, PROCESSED + 1)
    assert history == [RecordedTransition(raised, PROCESSED), first]
    assert store.query(TransitionFeed()) == history
    assert store.query(AlarmTransitions(T0, T0 + MINUTE)) == [raised, ana]
    (row,) = store.query(Alarms()).rows
    assert (row.state.operator.acked_by, row.state.operator.acked_at) == ("ana", T0 + 20)


def test_an_engine_and_an_api_process_writing_the_same_alarms_keep_both_parts(
    store: CassandraStore, cassandra_keyspace: str
) -> None:
    url = cassandra_url(cassandra_keyspace)
    race_two_writers(CassandraStore(url), CassandraStore(url))


def test_two_writers_storing_the_same_transitions_at_once_store_each_once(
    store: CassandraStore, cassandra_keyspace: str
) -> None:
    """Replays racing: every key is looked up, found missing and offered to IF NOT EXISTS by
    both at about the same time; each transition is stored once and the rows are as if
    written once."""
    writers = [CassandraStore(cassandra_url(cassandra_keyspace)) for _ in range(2)]
    try:
        replay_at_once(writers)
    finally:
        for w in writers:
            w.close()


def test_a_fourth_version_keyspace_gains_the_alarm_tables(cassandra_keyspace: str) -> None:
    keyspace = f"{cassandra_keyspace}_v4"
    tables = (
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s "
        "AND table_name IN ('alarms', 'alarm_log', 'alarm_history', 'alarm_days', 'alarm_feed')"
    )
    try:
        with cassandra_session() as session:
            migrate(session, parse_url(cassandra_url(keyspace)), to=4)
            assert list(session.execute(tables, (keyspace,))) == []
        store = CassandraStore(cassandra_url(keyspace))
        try:
            raised = lifecycle("s-1")[0]
            store.write(alarm_batch(raised))
            assert [r.transition for r in store.query(AlarmHistory(raised.alarm.id))] == [raised]
            assert [row.state.condition.active for row in store.query(Alarms()).rows] == [True]
        finally:
            store.close()
        with cassandra_session() as session:
            assert len(list(session.execute(tables, (keyspace,)))) == 5
            version = f"SELECT version FROM {keyspace}.schema_version WHERE part = 0"
            assert session.execute(version).one() == (SCHEMA_VERSION,)
    finally:
        with cassandra_session() as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
