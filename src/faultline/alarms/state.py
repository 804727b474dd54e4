"""Pure transitions of one alarm's state.

`apply` folds any transition into an `AlarmState`: condition transitions (raise, escalate,
clear) change only the condition, operator ones (ack, shelve, unshelve, comment) only the
operator part, so an acknowledgement racing a clear loses neither. The operator functions check
what a person asked for against the state and return the transition to record; a request that
makes no sense raises `InvalidTransition` saying why (the API answers it with 409).
"""

from __future__ import annotations

from dataclasses import replace

from faultline.alarm_schema import (
    AlarmState,
    AlarmTransition,
    Comment,
    Condition,
    OperatorAction,
    severity_rank,
)
from faultline.clock import iso_ms


class InvalidTransition(ValueError):
    """A transition the alarm's current state does not allow; the message says why."""


def apply(state: AlarmState, transition: AlarmTransition) -> AlarmState:
    """The state after `transition`; raises InvalidTransition when it does not fit."""
    if transition.alarm != state.alarm:
        raise InvalidTransition(
            f"transition for alarm {transition.alarm.id} applied to alarm {state.alarm.id}"
        )
    c, t = state.condition, transition
    if t.action == "raise":
        if c.active:
            raise InvalidTransition(
                f"alarm {state.alarm.id} is already active since {iso_ms(c.activation_ts or 0)}"
            )
        condition = Condition(True, t.activation_ts, None, t.severity, t.sensors)
        return replace(state, condition=condition)
    if t.action in ("escalate", "clear"):
        if not c.active or c.activation_ts != t.activation_ts:
            raise InvalidTransition(
                f"cannot {t.action} alarm {state.alarm.id}: its activation at "
                f"{iso_ms(t.activation_ts)} is not the active one"
            )
        if t.action == "clear":
            return replace(state, condition=replace(c, active=False, cleared_ts=t.ts))
        if severity_rank(t.severity) <= severity_rank(c.severity):
            raise InvalidTransition(
                f"cannot escalate alarm {state.alarm.id} from {c.severity} to {t.severity}"
            )
        return replace(state, condition=replace(c, severity=t.severity, sensors=t.sensors))
    return _apply_operator(state, t)


def _apply_operator(state: AlarmState, t: AlarmTransition) -> AlarmState:
    o = state.operator
    if t.action == "ack":
        if o.acked_activation is not None and t.activation_ts < o.acked_activation:
            return state  # late news of an older activation: the newer acknowledgement stands
        return replace(
            state,
            operator=replace(o, acked_activation=t.activation_ts, acked_by=t.actor, acked_at=t.ts),
        )
    if t.action == "shelve":
        return replace(state, operator=replace(o, shelved_until=t.until, shelved_by=t.actor))
    if t.action == "unshelve":
        return replace(state, operator=replace(o, shelved_until=None, shelved_by=""))
    comments = (*o.comments, Comment(t.ts, t.actor, t.comment))
    return replace(state, operator=replace(o, comments=comments))


def _operator_transition(
    state: AlarmState,
    action: OperatorAction,
    actor: str,
    at_ms: int,
    *,
    until: int | None = None,
    text: str = "",
) -> AlarmTransition:
    if not actor.strip():
        raise InvalidTransition(f"{action} of alarm {state.alarm.id} needs the operator's name")
    activation = state.condition.activation_ts
    if activation is None:
        raise InvalidTransition(f"alarm {state.alarm.id} has never been active")
    # An acknowledgement is once per activation; the others may repeat, so their time and
    # actor tell them apart.
    detail = "" if action == "ack" else f"{at_ms}:{actor}"
    return AlarmTransition(
        state.alarm,
        action,
        at_ms,
        activation,
        actor=actor,
        comment=text,
        until=until,
        detail=detail,
    )


def acknowledge(state: AlarmState, actor: str, at_ms: int) -> tuple[AlarmState, AlarmTransition]:
    """Acknowledge the latest activation, active or already cleared (ISA-18.2 allows both)."""
    t = _operator_transition(state, "ack", actor, at_ms)
    if state.acknowledged:
        o = state.operator
        raise InvalidTransition(
            f"alarm {state.alarm.id} is already acknowledged by {o.acked_by} "
            f"at {iso_ms(o.acked_at or 0)}"
        )
    return apply(state, t), t


def shelve(
    state: AlarmState, actor: str, at_ms: int, until_ms: int, max_shelve_ms: int
) -> tuple[AlarmState, AlarmTransition]:
    """Shelve until `until_ms` (a later shelving of a shelved alarm moves the end)."""
    if until_ms <= at_ms:
        raise InvalidTransition(
            f"shelving alarm {state.alarm.id} until {iso_ms(until_ms)}: that is not in the future"
        )
    if until_ms - at_ms > max_shelve_ms:
        raise InvalidTransition(
            f"shelving alarm {state.alarm.id} until {iso_ms(until_ms)}: longer than the "
            f"allowed {max_shelve_ms / 1000:g} s"
        )
    t = _operator_transition(state, "shelve", actor, at_ms, until=until_ms)
    return apply(state, t), t


def unshelve(state: AlarmState, actor: str, at_ms: int) -> tuple[AlarmState, AlarmTransition]:
    t = _operator_transition(state, "unshelve", actor, at_ms)
    if not state.shelved(at_ms):
        raise InvalidTransition(f"alarm {state.alarm.id} is not shelved")
    return apply(state, t), t


def comment(
    state: AlarmState, actor: str, at_ms: int, text: str, max_chars: int
) -> tuple[AlarmState, AlarmTransition]:
    if not text.strip():
        raise InvalidTransition(f"a comment on alarm {state.alarm.id} cannot be empty")
    if len(text) > max_chars:
        raise InvalidTransition(
            f"a comment on alarm {state.alarm.id} has {len(text)} characters, more than {max_chars}"
        )
    t = _operator_transition(state, "comment", actor, at_ms, text=text)
    return apply(state, t), t
