"""Cassandra's alarms: rows kept by write timestamps whatever order transitions arrive in,
the earlier of two racing writes of a transition keeping its recorded_at, and the migration
that gives an older keyspace the alarm tables.

Runs against the node in FAULTLINE_TEST_CASSANDRA, like tests/store/test_cassandra.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from faultline.alarm_schema import AlarmKey, AlarmState, AlarmTransition
from faultline.alarms.state import apply
from faultline.schema import WriteBatch
from faultline.store import AlarmHistory, Alarms, AlarmTransitions, TransitionFeed
from faultline.store.cassandra import CassandraStore
from faultline.store.cassandra_schema import SCHEMA_VERSION, migrate, parse_url
from tests.contract.batches import T0, write_batch
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


def carrying(*transitions: AlarmTransition, processed_at: int = T0 + 3_600_000) -> WriteBatch:
    return replace(write_batch(processed_at=processed_at), alarm_transitions=transitions)


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


def test_an_alarm_row_is_the_same_whatever_order_its_transitions_arrive_in(
    store: CassandraStore,
) -> None:
    """Each station's lifecycle is written one transition per batch in its own random order,
    every batch twice: each row is what applying the transitions in order gives, and the
    listing finds every station's (they are in several of the row partitions)."""
    rng = random.Random(10)
    expected: dict[str, tuple[AlarmState, int]] = {}
    batches: list[WriteBatch] = []
    for n in range(24):
        transitions = lifecycle(f"s-{n}")
        state = AlarmState(transitions[0].alarm)
        for t in transitions:
            state = apply(state, t)
        state = replace(state, operator=replace(state.operator, comments=()))
        changed_at = max(t.ts for t in transitions if t.action != "comment")
        expected[state.alarm.id] = (state, changed_at)
        order = rng.sample(transitions, len(transitions))
        batches += [carrying(t, processed_at=T0 + 3_600_000 + n) for t in order * 2]
    rng.shuffle(batches)
    for batch in batches:
        store.write(batch)

    page = store.query(Alarms(limit=1000))
    assert {row.state.alarm.id: (row.state, row.changed_at) for row in page.rows} == expected
    assert len(page.rows) == 24 and page.next_cursor is None


class _Interleaved:
    """Runs `then` once, right before the first time `name` runs, as a writer racing the
    store's would: it sees nothing the store's write has not written yet."""

    def __init__(self, store: CassandraStore, name: str, then: Any) -> None:
        self.run, self.name, self.then = store._run, name, then

    def __call__(self, name: str, rows: Any, **options: Any) -> Any:
        if name == self.name and self.then is not None:
            self.then, then = None, self.then
            then()
        return self.run(name, rows, **options)


@pytest.mark.parametrize("later_processed_at", [T0 + 20, T0 + 5], ids=["later", "earlier"])
def test_of_two_writers_racing_with_a_transition_the_earlier_keeps_its_recorded_at(
    store: CassandraStore,
    cassandra_keyspace: str,
    monkeypatch: pytest.MonkeyPatch,
    later_processed_at: int,
) -> None:
    """The later writer has looked the key up and found nothing when the earlier one writes it
    all; the later one's write then lands last. The earlier write wins by its write timestamp,
    whatever the batches' processed_at, and the feed serves the transition once."""
    raised = lifecycle("s-1")[0]
    earlier = CassandraStore(cassandra_url(cassandra_keyspace))
    try:
        earlier.clock_us = lambda: 1_000_000
        store.clock_us = lambda: 2_000_000
        race = _Interleaved(
            store, "log_alarm", lambda: earlier.write(carrying(raised, processed_at=T0 + 10))
        )
        monkeypatch.setattr(store, "_run", race)
        store.write(carrying(raised, processed_at=later_processed_at))
    finally:
        earlier.close()

    recorded = store.query(AlarmHistory(raised.alarm.id))
    assert [(r.transition, r.recorded_at) for r in recorded] == [(raised, T0 + 10)]
    assert store.query(TransitionFeed()) == recorded
    assert store.query(AlarmTransitions(T0, T0 + MINUTE)) == [raised]
    with cassandra_session() as session:
        entries = session.execute(f"SELECT recorded_at FROM {cassandra_keyspace}.alarm_feed")
        assert sorted(at for (at,) in entries) == sorted([T0 + 10, later_processed_at])


def test_a_fourth_version_keyspace_gains_the_alarm_tables(cassandra_keyspace: str) -> None:
    keyspace = f"{cassandra_keyspace}_v4"
    tables = (
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s "
        "AND table_name IN ('alarms', 'alarm_history', 'alarm_days', 'alarm_feed')"
    )
    try:
        with cassandra_session() as session:
            migrate(session, parse_url(cassandra_url(keyspace)), to=4)
            assert list(session.execute(tables, (keyspace,))) == []
        store = CassandraStore(cassandra_url(keyspace))
        try:
            raised = lifecycle("s-1")[0]
            store.write(carrying(raised))
            assert [r.transition for r in store.query(AlarmHistory(raised.alarm.id))] == [raised]
            assert [row.state.condition.active for row in store.query(Alarms()).rows] == [True]
        finally:
            store.close()
        with cassandra_session() as session:
            assert len(list(session.execute(tables, (keyspace,)))) == 4
            version = f"SELECT version FROM {keyspace}.schema_version WHERE part = 0"
            assert session.execute(version).one() == (SCHEMA_VERSION,)
    finally:
        with cassandra_session() as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
