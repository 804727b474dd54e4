"""How an alarm's row takes a transition, written once for the stores that keep rows as objects.

faultline.store.base states the rules; this is them in Python (the memory store applies them,
faultline.store.alarm_sql spells the same in SQL), and the contract suite holds every store to
the same rows. Each part of a row is a register that only a transition not older than the one
that last set it may overwrite, compared in the order the history is folded in
(faultline.alarms.state.apply):

* the condition by (ts, clear < raise < escalate, key) of raise, escalate and clear;
* the acknowledgement by the activation an ack is for;
* the shelving by (ts, key) of shelve and unshelve.

A clear keeps the severity and sensors of the activation it ends, as `apply` does (the engine's
clear carries the shares as of the clear, which differ), and takes its own only when the row does
not hold that activation. Since no part reads another, an operator's transition and the engine's
for the same alarm can be taken in either order and the row ends the same. Only transitions new
to the log are offered, so a replay, even one carrying different content under a known key,
changes no row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from faultline.alarm_schema import AlarmState, AlarmTransition, Condition, severity_rank
from faultline.store.base import AlarmRow, Alarms

ACTION_RANK = {"clear": 0, "raise": 1, "escalate": 2}
"""The order of condition transitions at one ts; every operator action comes after them."""
OPERATOR_RANK = 3
SHELVING = ("shelve", "unshelve")

HistoryOrder = tuple[int, int, str]
"""(ts, action rank, key): the order AlarmHistory returns and `apply` folds in."""


def action_rank(action: str) -> int:
    return ACTION_RANK.get(action, OPERATOR_RANK)


def history_order(t: AlarmTransition) -> HistoryOrder:
    return (t.ts, action_rank(t.action), t.key)


@dataclass(frozen=True, slots=True)
class StoredAlarm:
    """An alarm's row: its state (no comments) and the position of what last set each part."""

    state: AlarmState
    condition_at: HistoryOrder | None = None  # of the latest raise, escalate or clear taken
    shelving_at: tuple[int, str] | None = None  # (ts, key) of the latest shelve or unshelve taken

    @property
    def changed_at(self) -> int:
        """The ts of the latest change among the row's parts (a row has at least one)."""
        times = [
            self.condition_at and self.condition_at[0],
            self.state.operator.acked_at,
            self.shelving_at and self.shelving_at[0],
        ]
        return max(t for t in times if t is not None)

    def row(self) -> AlarmRow:
        return AlarmRow(self.state, self.changed_at)


def take(stored: StoredAlarm | None, t: AlarmTransition) -> StoredAlarm | None:
    """The row after `t`, a transition new to the log (`stored` None: the alarm has no row yet);
    None when the row stays as it is (a comment, or a transition older than its part's)."""
    if t.action == "comment":
        return None
    if stored is None:
        stored = StoredAlarm(AlarmState(t.alarm))
    state, operator = stored.state, stored.state.operator
    if t.action in ACTION_RANK:
        at = history_order(t)
        if stored.condition_at is not None and at < stored.condition_at:
            return None
        known = state.condition
        if t.action == "clear":
            same = known.activation_ts == t.activation_ts
            condition = Condition(
                False,
                t.activation_ts,
                t.ts,
                known.severity if same else t.severity,
                known.sensors if same else t.sensors,
            )
        else:
            condition = Condition(True, t.activation_ts, None, t.severity, t.sensors)
        return replace(stored, state=replace(state, condition=condition), condition_at=at)
    if t.action == "ack":
        acked = operator.acked_activation
        if acked is not None and t.activation_ts < acked:
            return None
        operator = replace(
            operator, acked_activation=t.activation_ts, acked_by=t.actor, acked_at=t.ts
        )
        return replace(stored, state=replace(state, operator=operator))
    at_shelving = (t.ts, t.key)
    if stored.shelving_at is not None and at_shelving < stored.shelving_at:
        return None
    if t.action == "shelve":
        operator = replace(operator, shelved_until=t.until, shelved_by=t.actor)
    else:
        operator = replace(operator, shelved_until=None, shelved_by="")
    return replace(stored, state=replace(state, operator=operator), shelving_at=at_shelving)


def matches(q: Alarms, row: AlarmRow) -> bool:
    """Whether `row` passes q's filters other than its order and cursor."""
    state, condition = row.state, row.state.condition
    if q.station_id is not None and state.alarm.station_id != q.station_id:
        return False
    if q.since_ms is not None and row.changed_at < q.since_ms:
        return False
    if q.min_severity is not None and severity_rank(condition.severity) < severity_rank(
        q.min_severity
    ):
        return False
    if q.state is None:
        return True
    activated = condition.activation_ts is not None
    return {
        "active": condition.active,
        "cleared": activated and not condition.active,
        "unacknowledged": activated and not state.acknowledged,
        "acknowledged": state.acknowledged,
        "shelved": q.now_ms is not None and state.shelved(q.now_ms),
    }[q.state]
