"""Alarm transitions, the rows they must leave, and a race of engine and operators, for store tests.

`folded` is the reference every store's row is held to: the alarm's history folded with
faultline.alarms.state.apply, comments dropped (they live in the history alone), changed at the
latest ts among the transitions that last set each part.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from faultline.alarm_schema import ANOMALY, SILENT, AlarmKey, AlarmState, AlarmTransition
from faultline.alarms import apply
from faultline.config import Severity
from faultline.schema import WriteBatch
from faultline.store import (
    AlarmHistory,
    AlarmRow,
    Alarms,
    AlarmTransitions,
    MemoryStore,
    RecordedTransition,
    Store,
    TransitionFeed,
)
from faultline.store.base import FIRST_MS, LAST_MS, AlarmStateFilter
from tests.contract.batches import T0, write_batch

KEY = AlarmKey("s-1", "temperature", ANOMALY)
SILENCE = AlarmKey("s-1", "*", SILENT)
SHARES = (("temperature", 0.75), ("humidity", 0.25))
PROCESSED = T0 + 3_600_000


def raised(alarm: AlarmKey, ts: int, severity: Severity = "medium") -> AlarmTransition:
    return AlarmTransition(alarm, "raise", ts, ts, severity=severity, sensors=SHARES)


def escalated(alarm: AlarmKey, ts: int, activation: int, severity: Severity) -> AlarmTransition:
    return AlarmTransition(
        alarm,
        "escalate",
        ts,
        activation,
        severity=severity,
        sensors=(("temperature", 0.5), ("humidity", 0.5)),
        detail=severity,
    )


def cleared(
    alarm: AlarmKey, ts: int, activation: int, severity: Severity = "medium"
) -> AlarmTransition:
    """A clear as the engine makes it: with the shares as of the clear, which differ from the
    activation's."""
    return AlarmTransition(
        alarm, "clear", ts, activation, severity=severity, sensors=(("temperature", 1.0),)
    )


def operator(
    alarm: AlarmKey,
    action: str,
    ts: int,
    activation: int,
    actor: str = "ana",
    *,
    until: int | None = None,
    text: str = "",
) -> AlarmTransition:
    """An operator's transition as faultline.alarms.state makes it (an ack once per activation,
    the others told apart by time and actor)."""
    return AlarmTransition(
        alarm,
        action,  # type: ignore[arg-type]
        ts,
        activation,
        actor=actor,
        comment=text,
        until=until,
        detail="" if action == "ack" else f"{ts}:{actor}",
    )


def alarm_batch(*transitions: AlarmTransition, processed_at: int = PROCESSED) -> WriteBatch:
    return write_batch(alarm_transitions=transitions, processed_at=processed_at)


def folded(alarm: AlarmKey, history: Sequence[RecordedTransition]) -> AlarmRow | None:
    """The row `alarm` must have after `history` (None: no row, as after comments alone)."""
    state = AlarmState(alarm)
    times: dict[str, int] = {}
    for recorded in history:
        t = recorded.transition
        state = apply(state, t)
        part = {"raise": "c", "escalate": "c", "clear": "c", "ack": "a", "comment": ""}.get(
            t.action, "s"
        )
        if part:
            times[part] = t.ts
    if not times:
        return None
    return AlarmRow(
        replace(state, operator=replace(state.operator, comments=())), max(times.values())
    )


def all_alarms(store: Store, limit: int = 1000, **filters: object) -> list[AlarmRow]:
    """Every alarm Alarms(**filters) gives, page by page."""
    rows: list[AlarmRow] = []
    after = None
    while True:
        page = store.query(Alarms(limit=limit, after=after, **filters))  # type: ignore[arg-type]
        rows.extend(page.rows)
        if page.next_cursor is None:
            return rows
        assert page.rows, "a page with a cursor after it cannot be empty"
        cursor = page.next_cursor
        # Latest change first: each page's cursor lies further on, or this would never end.
        assert after is None or (-cursor[0], cursor[1]) > (-after[0], after[1]), (after, cursor)
        after = cursor


def alarm_ids(store: Store, state: AlarmStateFilter | None = None, **filters: object) -> list[str]:
    return [r.state.alarm.id for r in all_alarms(store, state=state, **filters)]


def alarm_snapshot(store: Store) -> tuple[object, ...]:
    """Everything observable about a store's alarms."""
    rows = all_alarms(store)
    return (
        rows,
        {r.state.alarm.id: store.query(AlarmHistory(r.state.alarm.id)) for r in rows},
        store.query(TransitionFeed(limit=100_000)),
        store.query(AlarmTransitions(FIRST_MS, LAST_MS)),
    )


@dataclass(frozen=True)
class Race:
    """Engine writers and operator writers hammering the same alarms at once."""

    alarms: tuple[AlarmKey, ...] = tuple(
        AlarmKey(f"s-{i // 2}", sensor, ANOMALY)
        for i, sensor in enumerate(("temperature", "humidity") * 2)
    )
    activations: int = 8
    operators: int = 6  # engine threads: one per two alarms

    def activation(self, k: int) -> int:
        return T0 + k * 10_000

    def engine(self, alarms: Sequence[AlarmKey]) -> list[AlarmTransition]:
        """Each alarm raised, escalated and cleared `activations` times, in order."""
        out = []
        for k in range(self.activations):
            a = self.activation(k)
            for alarm in alarms:
                out += [
                    raised(alarm, a, "low"),
                    escalated(alarm, a + 1000, a, "high"),
                    cleared(alarm, a + 5000, a, "high"),
                ]
        return out

    def operator(self, j: int) -> list[AlarmTransition]:
        """Operator j's acks, shelvings, unshelvings and comments of every activation, at times
        of their own (every operator acks every activation: the first ack stored wins)."""
        out = []
        actor = f"op-{j}"
        for k in range(self.activations):
            a = self.activation(k)
            for alarm in self.alarms:
                out += [
                    operator(alarm, "ack", a + 2000 + j, a, actor),
                    operator(alarm, "shelve", a + 3000 + j, a, actor, until=a + 60_000),
                    operator(alarm, "comment", a + 3500 + j, a, actor, text=f"seen by {actor}"),
                ]
                if j % 2 == 0:
                    out.append(operator(alarm, "unshelve", a + 2500 + j, a, actor))
        return out

    def run(self, engine_store: Store, operator_store: Store) -> None:
        """Write everything, one transition per batch, from every writer at once."""
        writers = [
            (engine_store, self.engine(self.alarms[i : i + 2]))
            for i in range(0, len(self.alarms), 2)
        ] + [(operator_store, self.operator(j)) for j in range(self.operators)]
        start = threading.Barrier(len(writers))
        failed: list[BaseException] = []

        def write(store: Store, transitions: list[AlarmTransition]) -> None:
            try:
                start.wait()
                for n, t in enumerate(transitions):
                    store.write(alarm_batch(t, processed_at=PROCESSED + n))
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=write, args=w) for w in writers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failed, failed

    def check(self, store: Store) -> None:
        """Both parts kept in every row, each row the fold of its history, nothing lost."""
        rows = {r.state.alarm: r for r in all_alarms(store)}
        assert set(rows) == set(self.alarms)
        last = self.activation(self.activations - 1)
        for alarm in self.alarms:
            history = store.query(AlarmHistory(alarm.id))
            per_activation = 3 + self.operators * 2 + 1 + (self.operators + 1) // 2
            assert len(history) == self.activations * per_activation
            assert rows[alarm] == folded(alarm, history)
            state = rows[alarm].state
            assert (state.condition.activation_ts, state.condition.active) == (last, False)
            assert state.condition.severity == "high" and state.acknowledged
            assert state.operator.acked_at is not None
            assert last + 2000 <= state.operator.acked_at < last + 2000 + self.operators
            # The latest shelving change is the last operator's shelve (unshelves come earlier).
            assert state.operator.shelved_until == last + 60_000
            assert state.operator.shelved_by == f"op-{self.operators - 1}"


def race_two_writers(engine: Store, api: Store) -> None:
    """Race() between two handles on one database, as an engine and an API process have; both
    then see the same rows. Closes both."""
    race = Race()
    try:
        race.run(engine, api)

        race.check(engine)
        race.check(api)
    finally:
        engine.close()
        api.close()


def replay_at_once(writers: Sequence[Store]) -> None:
    """Replays racing: every writer writes the same engine and operator transitions of a
    `Race`, three a batch, all starting together; then the first store must hold exactly what
    one write of them leaves (raises the first writer's failure, if any)."""
    race = Race()
    transitions = race.engine(race.alarms) + race.operator(0) + race.operator(1)
    start = threading.Barrier(len(writers))
    failed: list[BaseException] = []

    def write(writer: Store) -> None:
        try:
            start.wait()
            for n in range(0, len(transitions), 3):
                writer.write(alarm_batch(*transitions[n : n + 3]))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, failed
    reference = MemoryStore()
    reference.write(alarm_batch(*transitions))
    assert alarm_snapshot(writers[0]) == alarm_snapshot(reference)
