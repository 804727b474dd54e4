"""The alarm state machine: two parts that never overwrite each other, and the operator requests
it refuses (the API will answer those with 409), each with a message saying why."""

from __future__ import annotations

import pytest

from faultline.alarm_schema import ANOMALY, AlarmKey, AlarmState, AlarmTransition
from faultline.alarms import InvalidTransition, acknowledge, apply, comment, shelve, unshelve

KEY = AlarmKey("s1", "temperature", ANOMALY)
T0 = 1_767_225_600_000
DAY_MS = 86_400_000


def raised(at: int = T0) -> AlarmState:
    return apply(AlarmState(KEY), AlarmTransition(KEY, "raise", at, at, severity="medium"))


def cleared(state: AlarmState, at: int) -> AlarmState:
    activation = state.condition.activation_ts
    assert activation is not None
    return apply(state, AlarmTransition(KEY, "clear", at, activation))


def test_raise_clear_and_acknowledge_keep_each_others_part() -> None:
    state = raised()
    assert state.condition.active and not state.acknowledged
    state, ack = acknowledge(state, "ana", T0 + 5)
    assert ack.key == f"{KEY.id}|{T0}|ack"
    assert state.acknowledged and state.condition.active
    state = cleared(state, T0 + 10)
    # The engine's clear leaves the acknowledgement; the ack left the condition.
    assert not state.condition.active and state.acknowledged
    assert state.operator.acked_by == "ana"


def test_acknowledging_before_a_clear_or_after_it_ends_in_the_same_state() -> None:
    a, _ = acknowledge(cleared(raised(), T0 + 10), "ana", T0 + 5)
    b = cleared(acknowledge(raised(), "ana", T0 + 5)[0], T0 + 10)
    assert a == b


def test_a_new_activation_is_unacknowledged_without_touching_the_operator_part() -> None:
    state, _ = acknowledge(raised(), "ana", T0 + 1)
    state = cleared(state, T0 + 2)
    again = apply(state, AlarmTransition(KEY, "raise", T0 + 9, T0 + 9))
    assert not again.acknowledged
    assert again.operator == state.operator


def test_a_late_acknowledgement_of_an_older_activation_leaves_the_newer_one() -> None:
    first, old_ack = acknowledge(raised(), "ana", T0 + 1)
    again = apply(cleared(first, T0 + 2), AlarmTransition(KEY, "raise", T0 + 9, T0 + 9))
    state, _ = acknowledge(again, "bo", T0 + 10)
    # The older activation's acknowledgement arrives after the newer one's (a replay, a slow
    # writer): the newer stands, as every store keeps it.
    assert apply(state, old_ack) == state and state.operator.acked_by == "bo"


def test_acknowledging_twice_is_refused_saying_by_whom() -> None:
    state, _ = acknowledge(raised(), "ana", T0 + 1)
    with pytest.raises(InvalidTransition, match="already acknowledged by ana"):
        acknowledge(state, "bo", T0 + 2)


def test_operator_requests_on_an_alarm_never_active_are_refused() -> None:
    with pytest.raises(InvalidTransition, match="never been active"):
        acknowledge(AlarmState(KEY), "ana", T0)
    with pytest.raises(InvalidTransition, match="never been active"):
        comment(AlarmState(KEY), "ana", T0, "hello", 100)


def test_requests_need_an_operator_name() -> None:
    with pytest.raises(InvalidTransition, match="operator's name"):
        acknowledge(raised(), "  ", T0)


def test_shelving_lasts_until_its_end_and_then_ends_by_itself() -> None:
    state, t = shelve(raised(), "ana", T0 + 1, T0 + 1000, DAY_MS)
    assert t.until == T0 + 1000
    assert state.shelved(T0 + 999) and not state.shelved(T0 + 1000)
    with pytest.raises(InvalidTransition, match="is not shelved"):
        unshelve(state, "ana", T0 + 1000)


def test_unshelve_ends_a_shelving_early() -> None:
    state, _ = shelve(raised(), "ana", T0 + 1, T0 + 1000, DAY_MS)
    state, t = unshelve(state, "bo", T0 + 2)
    assert not state.shelved(T0 + 3)
    assert t.key == f"{KEY.id}|{T0}|unshelve|{T0 + 2}:bo"


@pytest.mark.parametrize(
    ("until", "message"),
    [(T0, "not in the future"), (T0 - 5, "not in the future"), (T0 + DAY_MS + 1, "longer than")],
)
def test_shelving_into_the_past_or_too_long_is_refused(until: int, message: str) -> None:
    with pytest.raises(InvalidTransition, match=message):
        shelve(raised(), "ana", T0, until, DAY_MS)


def test_comments_accumulate_and_bad_ones_are_refused() -> None:
    state, _ = comment(raised(), "ana", T0 + 1, "checking the pump", 20)
    state, _ = comment(state, "bo", T0 + 2, "valve replaced", 20)
    assert [c.text for c in state.operator.comments] == ["checking the pump", "valve replaced"]
    with pytest.raises(InvalidTransition, match="cannot be empty"):
        comment(state, "ana", T0 + 3, " ", 20)
    with pytest.raises(InvalidTransition, match="more than 20"):
        comment(state, "ana", T0 + 3, "x" * 21, 20)


def test_condition_transitions_that_do_not_fit_are_refused() -> None:
    state = raised()
    with pytest.raises(InvalidTransition, match="already active"):
        apply(state, AlarmTransition(KEY, "raise", T0 + 1, T0 + 1))
    with pytest.raises(InvalidTransition, match="not the active one"):
        apply(state, AlarmTransition(KEY, "clear", T0 + 1, T0 - 1))
    with pytest.raises(InvalidTransition, match="from medium to low"):
        apply(state, AlarmTransition(KEY, "escalate", T0 + 1, T0, severity="low"))
    with pytest.raises(InvalidTransition, match="not the active one"):
        apply(cleared(state, T0 + 1), AlarmTransition(KEY, "clear", T0 + 2, T0))
    other = AlarmKey("s2", "temperature", ANOMALY)
    with pytest.raises(InvalidTransition, match="applied to alarm"):
        apply(state, AlarmTransition(other, "clear", T0 + 1, T0))


def test_escalation_raises_the_severity_of_the_active_condition() -> None:
    state = apply(raised(), AlarmTransition(KEY, "escalate", T0 + 1, T0, severity="critical"))
    assert state.condition.severity == "critical" and state.condition.active
