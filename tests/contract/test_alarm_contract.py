"""The alarm part of the store contract (faultline.store.base): the log of transitions, the rows
of current state, their queries, replays, races and refusals, on every backend."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from faultline.alarm_schema import ANOMALY, AlarmKey, AlarmState, AlarmTransition, Condition
from faultline.store import (
    AlarmHistory,
    AlarmPage,
    AlarmRow,
    Alarms,
    AlarmTransitions,
    InvalidBatch,
    RecordedTransition,
    Stations,
    Store,
    TransitionFeed,
)
from faultline.store.base import FIRST_MS, LAST_MS
from tests.contract.alarms import (
    KEY,
    PROCESSED,
    SHARES,
    SILENCE,
    Race,
    alarm_batch,
    alarm_ids,
    alarm_snapshot,
    all_alarms,
    cleared,
    escalated,
    folded,
    operator,
    raised,
)
from tests.contract.batches import T0, reading_frame, write_batch

EVER = (FIRST_MS, LAST_MS)
A1, A2 = T0, T0 + 100_000  # two activations of KEY


def lifecycle() -> list[list[AlarmTransition]]:
    """Batches of two activations of KEY, every action, as the engine and an operator make them."""
    return [
        [raised(KEY, A1, "low")],
        [escalated(KEY, A1 + 10, A1, "high"), operator(KEY, "ack", A1 + 20, A1)],
        [
            operator(KEY, "shelve", A1 + 30, A1, until=A1 + 3_600_000),
            operator(KEY, "comment", A1 + 35, A1, "bob", text="valve 3 — checked ✓"),
        ],
        [cleared(KEY, A1 + 40, A1, "high")],
        [raised(KEY, A2, "medium"), operator(KEY, "comment", A2 + 5, A2, text="again")],
        [operator(KEY, "unshelve", A2 + 10, A2, "bob")],
        [operator(KEY, "ack", A2 + 20, A2, "bob"), escalated(KEY, A2 + 30, A2, "critical")],
    ]


def test_a_new_store_has_no_alarms(store: Store) -> None:
    assert store.query(Alarms()) == AlarmPage([], None)
    assert store.query(AlarmHistory(KEY.id)) == []
    assert store.query(AlarmTransitions(*EVER)) == []
    assert store.query(TransitionFeed()) == []


def test_a_raise_is_logged_and_becomes_the_alarms_row(store: Store) -> None:
    t = raised(KEY, T0)

    store.write(alarm_batch(t, processed_at=T0 + 7))

    assert store.query(AlarmHistory(KEY.id)) == [RecordedTransition(t, T0 + 7)]
    assert store.query(TransitionFeed()) == [RecordedTransition(t, T0 + 7)]
    assert store.query(AlarmTransitions(*EVER)) == [t]
    condition = Condition(True, T0, None, "medium", SHARES)
    assert store.query(Alarms()) == AlarmPage([AlarmRow(AlarmState(KEY, condition), T0)], None)


def test_every_field_comes_back_as_written(store: Store) -> None:
    batches = lifecycle()
    for n, transitions in enumerate(batches):
        store.write(alarm_batch(*transitions, processed_at=PROCESSED + n))

    history = store.query(AlarmHistory(KEY.id))

    written = {t.key: (t, PROCESSED + n) for n, b in enumerate(batches) for t in b}
    assert sorted((r.transition.key, (r.transition, r.recorded_at)) for r in history) == sorted(
        written.items()
    )
    shares = history[0].transition.sensors
    assert all(isinstance(share, float) for _, share in shares)


def test_the_row_is_its_history_folded_after_every_batch(store: Store) -> None:
    for n, transitions in enumerate(lifecycle()):
        store.write(alarm_batch(*transitions, processed_at=PROCESSED + n))

        assert all_alarms(store) == [folded(KEY, store.query(AlarmHistory(KEY.id)))]

    (row,) = all_alarms(store)
    # The clear kept the severity and shares of the activation it ended, as apply does.
    assert row.state.condition == Condition(
        True, A2, None, "critical", (("temperature", 0.5), ("humidity", 0.5))
    )
    assert (row.state.operator.acked_activation, row.state.operator.acked_by) == (A2, "bob")
    assert row.state.operator.shelved_until is None and row.state.operator.comments == ()
    assert row.changed_at == A2 + 30


def test_a_cleared_activation_keeps_its_severity_and_shares(store: Store) -> None:
    store.write(alarm_batch(raised(KEY, A1, "low"), escalated(KEY, A1 + 10, A1, "high")))
    store.write(alarm_batch(cleared(KEY, A1 + 40, A1, "medium")))

    (row,) = all_alarms(store)
    assert row.state.condition == Condition(
        False, A1, A1 + 40, "high", (("temperature", 0.5), ("humidity", 0.5))
    )


def test_a_clear_of_an_activation_the_row_never_held_brings_its_own(store: Store) -> None:
    store.write(alarm_batch(cleared(KEY, A1 + 40, A1, "medium")))

    (row,) = all_alarms(store)
    assert row.state.condition == Condition(False, A1, A1 + 40, "medium", (("temperature", 1.0),))


def test_one_batch_in_any_order_leaves_what_the_batches_in_order_leave(store: Store) -> None:
    everything = [t for transitions in lifecycle() for t in transitions]
    random.Random(7).shuffle(everything)

    store.write(alarm_batch(*everything))

    history = store.query(AlarmHistory(KEY.id))
    assert [r.transition for r in history] == sorted(
        everything,
        key=lambda t: (t.ts, {"clear": 0, "raise": 1, "escalate": 2}.get(t.action, 3), t.key),
    )
    assert all_alarms(store) == [folded(KEY, history)]


def test_a_replayed_batch_adds_no_transition_and_changes_nothing(store: Store) -> None:
    batches = lifecycle()
    for n, transitions in enumerate(batches):
        store.write(alarm_batch(*transitions, processed_at=PROCESSED + n))
    before = alarm_snapshot(store)

    for transitions in batches:
        store.write(alarm_batch(*transitions, processed_at=PROCESSED + 1000))

    assert alarm_snapshot(store) == before


def test_a_known_key_with_other_content_is_ignored(store: Store) -> None:
    first = raised(KEY, A1, "medium")
    ack = operator(KEY, "ack", A1 + 20, A1, "ana")
    store.write(alarm_batch(first, ack))
    before = alarm_snapshot(store)

    # Same keys (the key names the activation and the action), other severity, actor and time.
    store.write(
        alarm_batch(
            replace(first, severity="critical", sensors=(("noise_level", 1.0),)),
            replace(ack, actor="bob", ts=A1 + 99),
            processed_at=PROCESSED + 5,
        )
    )

    assert alarm_snapshot(store) == before


def test_within_a_batch_the_first_of_several_with_one_key_wins(store: Store) -> None:
    first = raised(KEY, A1, "medium")

    store.write(alarm_batch(first, replace(first, severity="critical")))

    assert [r.transition for r in store.query(AlarmHistory(KEY.id))] == [first]
    assert all_alarms(store)[0].state.condition.severity == "medium"


def test_an_older_condition_written_late_does_not_move_the_row_back(store: Store) -> None:
    store.write(alarm_batch(raised(KEY, A2, "medium")))
    newer = all_alarms(store)

    # Transitions new to the log, but older than what the row holds (a batch written late).
    store.write(alarm_batch(raised(KEY, A1, "high"), cleared(KEY, A1 + 40, A1)))

    assert all_alarms(store) == newer
    history = store.query(AlarmHistory(KEY.id))
    assert [r.transition.action for r in history] == ["raise", "clear", "raise"]
    assert newer == [folded(KEY, history)]


def test_a_clear_and_the_next_raise_at_one_time_leave_the_alarm_active(store: Store) -> None:
    later = A1 + 40
    store.write(alarm_batch(raised(KEY, A1)))
    store.write(alarm_batch(raised(KEY, later)))  # before the clear it follows

    store.write(alarm_batch(cleared(KEY, later, A1)))

    (row,) = all_alarms(store)
    assert row.state.condition.active and row.state.condition.activation_ts == later
    assert [row] == [folded(KEY, store.query(AlarmHistory(KEY.id)))]


def test_an_older_shelving_written_late_does_not_move_the_row_back(store: Store) -> None:
    store.write(alarm_batch(raised(KEY, A1)))
    store.write(alarm_batch(operator(KEY, "unshelve", A1 + 50, A1)))

    store.write(alarm_batch(operator(KEY, "shelve", A1 + 30, A1, until=A1 + 60_000)))

    (row,) = all_alarms(store)
    assert row.state.operator.shelved_until is None
    assert [row] == [folded(KEY, store.query(AlarmHistory(KEY.id)))]


def test_an_ack_of_an_older_activation_never_unacknowledges_a_newer_one(store: Store) -> None:
    store.write(alarm_batch(raised(KEY, A1), cleared(KEY, A1 + 40, A1), raised(KEY, A2)))
    store.write(alarm_batch(operator(KEY, "ack", A2 + 10, A2, "bob")))

    # Ana acknowledged what she saw, the first activation, after the second was acknowledged.
    store.write(alarm_batch(operator(KEY, "ack", A2 + 20, A1, "ana")))

    (row,) = all_alarms(store)
    assert row.state.acknowledged and row.state.operator.acked_by == "bob"
    assert row.changed_at == A2 + 10
    assert len(store.query(AlarmHistory(KEY.id))) == 5


def test_operator_actions_alone_make_a_row_and_comments_make_none(store: Store) -> None:
    other = AlarmKey("s-2", "humidity", ANOMALY)
    store.write(alarm_batch(operator(KEY, "comment", A1, A1, text="before it was raised?")))
    store.write(alarm_batch(operator(other, "ack", A1 + 5, A1)))

    assert [r.state.alarm for r in all_alarms(store)] == [other]
    assert len(store.query(AlarmHistory(KEY.id))) == 1
    assert all_alarms(store, state="active") == all_alarms(store, state="cleared") == []


def test_engine_and_operators_racing_for_the_same_alarms_keep_both_parts(store: Store) -> None:
    race = Race()

    race.run(store, store)

    race.check(store)


def _filter_fixture(store: Store) -> dict[str, AlarmKey]:
    """Alarms in every state: ids by name, changed at T0 + 10 * their position."""
    keys = {
        "active": AlarmKey("s-1", "temperature", ANOMALY),
        "active_acked": SILENCE,
        "cleared": AlarmKey("s-2", "humidity", ANOMALY),
        "cleared_acked_shelved": AlarmKey("s-2", "noise_level", ANOMALY),
        "shelf_expired": AlarmKey("s-3", "temperature", ANOMALY),
        "never_active": AlarmKey("s-4", "humidity", ANOMALY),  # acknowledged, never raised
    }
    a, b, c, d, e, f = keys.values()
    store.write(alarm_batch(raised(a, T0, "medium")))
    store.write(alarm_batch(raised(b, T0 + 10, "high"), operator(b, "ack", T0 + 20, T0 + 10)))
    store.write(alarm_batch(raised(c, T0 + 30, "low"), cleared(c, T0 + 40, T0 + 30, "low")))
    store.write(
        alarm_batch(
            raised(d, T0 + 50, "critical"),
            operator(d, "ack", T0 + 60, T0 + 50),
            cleared(d, T0 + 70, T0 + 50, "critical"),
            operator(d, "shelve", T0 + 80, T0 + 50, until=T0 + 10_000),
        )
    )
    store.write(
        alarm_batch(raised(e, T0 + 90), operator(e, "shelve", T0 + 91, T0 + 90, until=T0 + 95))
    )
    store.write(alarm_batch(operator(f, "ack", T0 + 5, T0)))
    return keys


ALL = [
    "shelf_expired",
    "cleared_acked_shelved",
    "cleared",
    "active_acked",
    "never_active",
    "active",
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ALL),
        ({"state": "active"}, ["shelf_expired", "active_acked", "active"]),
        ({"state": "cleared"}, ["cleared_acked_shelved", "cleared"]),
        ({"state": "unacknowledged"}, ["shelf_expired", "cleared", "active"]),
        ({"state": "acknowledged"}, ["cleared_acked_shelved", "active_acked"]),
        ({"state": "shelved", "now_ms": T0 + 100}, ["cleared_acked_shelved"]),
        ({"state": "shelved", "now_ms": T0 + 92}, ["shelf_expired", "cleared_acked_shelved"]),
        ({"state": "shelved", "now_ms": T0 + 10_000}, []),  # shelving ends at its time
        ({"station_id": "s-2"}, ["cleared_acked_shelved", "cleared"]),
        ({"station_id": "s-9"}, []),
        ({"min_severity": "high"}, ["cleared_acked_shelved", "active_acked"]),
        ({"min_severity": "low"}, ALL),
        ({"since_ms": T0 + 40}, ["shelf_expired", "cleared_acked_shelved", "cleared"]),
        ({"since_ms": T0 + 41}, ["shelf_expired", "cleared_acked_shelved"]),
        (
            {"station_id": "s-1", "state": "active", "min_severity": "medium"},
            ["active_acked", "active"],
        ),
        (
            {"state": "unacknowledged", "since_ms": T0 + 30, "min_severity": "medium"},
            ["shelf_expired"],
        ),
    ],
    ids=lambda v: (
        ",".join(f"{k}={x}" for k, x in v.items()) or "all" if isinstance(v, dict) else ""
    ),
)
@pytest.mark.parametrize("limit", [1, 2, 100])
def test_alarms_are_filtered_and_ordered_by_their_latest_change(
    store: Store, filters: dict[str, object], expected: list[str], limit: int
) -> None:
    keys = _filter_fixture(store)

    assert alarm_ids(store, limit=limit, **filters) == [keys[name].id for name in expected]


def test_pages_follow_each_other_without_gap_or_repeat_ties_by_id(store: Store) -> None:
    keys = [AlarmKey(f"s-{i % 5}", f"sensor-{i}", ANOMALY) for i in range(23)]
    # Changed in threes at one time, so that pages cut through ties.
    store.write(alarm_batch(*(raised(k, T0 + 1000 * (i // 3)) for i, k in enumerate(keys))))
    expected = sorted(keys, key=lambda k: (-(keys.index(k) // 3), k.id))

    for limit in (1, 2, 3, 4, 22, 23, 24):
        assert alarm_ids(store, limit=limit) == [k.id for k in expected]
        s3 = [k.id for k in expected if k.station_id == "s-3"]
        assert alarm_ids(store, limit=limit, station_id="s-3") == s3

    page = store.query(Alarms(limit=23))
    assert len(page.rows) == 23 and page.next_cursor is None
    page = store.query(Alarms(limit=4))
    last = page.rows[-1]
    assert page.next_cursor == (last.changed_at, last.state.alarm.id)


def test_the_history_is_in_time_then_action_then_key_order(store: Store) -> None:
    at = A1 + 40
    same_time = [
        operator(KEY, "comment", at, at, "zoe", text="z"),
        operator(KEY, "ack", at, at),
        escalated(KEY, at, at, "high"),
        raised(KEY, at, "medium"),
        cleared(KEY, at, A1),
        operator(KEY, "comment", at, at, "amy", text="a"),
    ]
    store.write(alarm_batch(raised(KEY, A1)))

    store.write(alarm_batch(*same_time))

    actions = [(r.transition.action, r.transition.actor) for r in store.query(AlarmHistory(KEY.id))]
    assert actions == [
        ("raise", "engine"),
        ("clear", "engine"),
        ("raise", "engine"),
        ("escalate", "engine"),
        ("ack", "ana"),  # the key ...|ack sorts before ...|comment|...
        ("comment", "amy"),
        ("comment", "zoe"),
    ]
    assert all_alarms(store) == [folded(KEY, store.query(AlarmHistory(KEY.id)))]


def test_transitions_by_time_and_action_in_time_then_alarm_order(store: Store) -> None:
    # "a" < "a-b" as station ids, though the alarm id "a-b|..." sorts before "a|...".
    short, long = AlarmKey("a", "x", ANOMALY), AlarmKey("a-b", "x", ANOMALY)
    store.write(
        alarm_batch(
            raised(long, T0),
            raised(short, T0),
            operator(short, "ack", T0 + 5, T0),
            cleared(long, T0 + 10, T0),
            raised(KEY, T0 + 20),
        )
    )

    got = store.query(AlarmTransitions(T0, T0 + 20))
    assert [(t.alarm, t.action) for t in got] == [
        (short, "raise"),
        (long, "raise"),
        (short, "ack"),
        (long, "clear"),
    ]
    only = store.query(AlarmTransitions(T0, T0 + 21, actions=("raise", "clear")))
    assert [(t.alarm, t.action) for t in only] == [
        (short, "raise"),
        (long, "raise"),
        (long, "clear"),
        (KEY, "raise"),
    ]
    assert store.query(AlarmTransitions(T0 + 1, T0 + 5)) == []
    assert store.query(AlarmTransitions(T0, T0 + 21, actions=("shelve",))) == []


def test_the_feed_is_in_record_order_strictly_after_its_cursor(store: Store) -> None:
    b = AlarmKey("s-2", "humidity", ANOMALY)
    store.write(alarm_batch(raised(KEY, T0), raised(b, T0 + 1), processed_at=PROCESSED + 10))
    store.write(alarm_batch(operator(KEY, "ack", T0 + 2, T0), processed_at=PROCESSED + 20))
    # Recorded earlier by a writer whose clock is behind; replays of the above keep their time.
    store.write(
        alarm_batch(cleared(b, T0 + 3, T0 + 1), raised(b, T0 + 1), processed_at=PROCESSED + 15)
    )

    feed = store.query(TransitionFeed())
    order = [(r.recorded_at, r.transition.key) for r in feed]
    assert order == sorted(order) and len(order) == 4
    assert [r.recorded_at for r in feed] == [PROCESSED + 10] * 2 + [PROCESSED + 15, PROCESSED + 20]
    for n in range(len(feed) + 1):
        after = None if n == 0 else order[n - 1]
        assert store.query(TransitionFeed(after=after)) == feed[n:]
        assert store.query(TransitionFeed(after=after, limit=1)) == feed[n : n + 1]
    # A cursor need not be a stored pair: between two keys of one time, after every key.
    assert store.query(TransitionFeed(after=(PROCESSED + 10, order[0][1] + "!"))) == feed[1:]
    assert store.query(TransitionFeed(after=(PROCESSED + 20, ""))) == feed[3:]


_T = raised(KEY, T0)
_WHAT = f"alarm transition {_T.key!r}"
_RANGE = "is outside the times 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z"
INVALID: dict[str, tuple[AlarmTransition, str]] = {
    "ts after the last time": (
        replace(_T, ts=LAST_MS + 1),
        f"{_WHAT}: ts ({LAST_MS + 1} ms since 1970) {_RANGE}",
    ),
    "activation before the first time": (
        replace(_T, activation_ts=FIRST_MS - 1),
        f"alarm transition '{KEY.id}|{FIRST_MS - 1}|raise': activation_ts ({FIRST_MS - 1} ms "
        f"since 1970) {_RANGE}",
    ),
    "shelving beyond the last time": (
        replace(_T, action="shelve", until=LAST_MS + 1, detail="x"),
        f"alarm transition '{KEY.id}|{T0}|shelve|x': until ({LAST_MS + 1} ms since 1970) {_RANGE}",
    ),
    "ts not an integer": (
        replace(_T, ts=1.5),
        f"{_WHAT}: ts must be an integer (epoch ms), got 1.5",
    ),
    "unknown action": (
        replace(_T, action="snooze"),
        f"alarm transition '{KEY.id}|{T0}|snooze': action 'snooze' is not one of raise, "
        "escalate, clear, ack, shelve, unshelve, comment",
    ),
    "unknown severity": (
        replace(_T, severity="extreme"),
        f"{_WHAT}: severity 'extreme' is not one of low, medium, high, critical",
    ),
    "unknown kind": (
        replace(_T, alarm=AlarmKey("s-1", "temperature", "bogus")),  # type: ignore[arg-type]
        "alarm 's-1|temperature|bogus': kind 'bogus' is not one of anomaly, silent",
    ),
    "NUL in a comment": (
        replace(_T, action="comment", comment="a\x00b"),
        f"alarm transition '{KEY.id}|{T0}|comment': comment 'a\\x00b' holds a NUL character, "
        "which stores cannot hold",
    ),
    "NUL in an actor": (
        replace(_T, actor="an\x00a"),
        f"{_WHAT}: actor 'an\\x00a' holds a NUL character, which stores cannot hold",
    ),
    "lone surrogate in a station id": (
        replace(_T, alarm=AlarmKey("s-\ud800", "temperature", ANOMALY)),
        "alarm station_id 's-\\ud800' is not valid Unicode (a lone surrogate)",
    ),
    "empty sensor": (
        replace(_T, alarm=AlarmKey("s-1", "", ANOMALY)),
        "alarm sensor must not be empty",
    ),
    "non-finite share": (
        replace(_T, sensors=(("temperature", float("nan")),)),
        f"{_WHAT}: the share of sensor 'temperature' is nan: shares must be finite numbers",
    ),
    "not a transition": ("raise", "alarm transition #1 is a str, not an AlarmTransition"),  # type: ignore[dict-item]
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_transition_is_refused_with_one_message_before_anything_is_written(
    store: Store, case: str
) -> None:
    bad, message = INVALID[case]
    batch = replace(
        write_batch(reading_frame("s-1", [T0])),
        alarm_transitions=(raised(SILENCE, T0), bad),
    )

    with pytest.raises(InvalidBatch) as refused:
        store.write(batch)

    assert str(refused.value) == message
    assert store.query(Stations()) == []
    assert alarm_snapshot(store) == ([], {}, [], [])
