"""The alarm tables of the SQLite and PostgreSQL stores: schema, writes and reads, written once and
spelled for each by its types, parameter marker and name of `greatest`.

Layout, and why:

* `alarm_transitions` is the log, keyed by the transition's key (a replay inserts nothing), with
  an index per query: (alarm_id, ts, action_rank, key) for one alarm's history in the order it
  folds in, (ts, station_id, sensor, kind, key) for the transitions of a time range, and
  (recorded_at, key) for the notifier's feed.
* `alarms` holds one row per alarm, keyed by its id, indexed by (changed_at DESC, id) and by
  (station_id, changed_at DESC, id): Alarms walks one of them in its order and checks its other
  filters on the rows it passes, stopping at a page's end (or at `since_ms`). Besides each part's
  columns a row keeps the position of the transition that last set it (condition_ts/rank/key,
  acked_activation, shelving_ts/key), which the guards compare.

A write offers the batch's transitions in (alarm id, history) order: each is inserted in the log
(ON CONFLICT DO NOTHING) and, only when it went in, upserted into its alarm's row by the
statement of its part, which sets that part's columns and `changed_at` and nothing else, under a
WHERE guard that refuses a transition older than the part's (the rules of
faultline.store.alarm_rows). Writers that share the database (the engine, the API) therefore never
overwrite each other's part: each statement reads and writes one row atomically, and, going
through alarms in id order, two writers lock rows in the same order.

These tables are migrations of each store, so `alarm_tables` must never change: a later schema
change is a new function and a new migration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from faultline.alarm_schema import AlarmKey, AlarmState, AlarmTransition, Condition, Operator
from faultline.config import SEVERITIES
from faultline.store.aggregate_sql import Sql
from faultline.store.alarm_rows import SHELVING, action_rank, history_order
from faultline.store.base import (
    AlarmHistory,
    AlarmPage,
    AlarmRow,
    Alarms,
    AlarmTransitions,
    RecordedTransition,
    TransitionFeed,
)


def alarm_tables(integer: str, text: str, table_options: str) -> tuple[str, ...]:
    """The migration creating the alarm tables, in a store's spelling of a 64-bit integer, of text
    ordered by code point, and of what follows a table's definition."""
    return (
        f"""CREATE TABLE alarm_transitions (
            transition_key {text} PRIMARY KEY,
            alarm_id {text} NOT NULL,
            station_id {text} NOT NULL,
            sensor {text} NOT NULL,
            kind {text} NOT NULL,
            action {text} NOT NULL,
            action_rank {integer} NOT NULL,
            ts {integer} NOT NULL,
            activation_ts {integer} NOT NULL,
            actor {text} NOT NULL,
            severity {text} NOT NULL,
            sensors {text} NOT NULL,
            comment {text} NOT NULL,
            until_ts {integer},
            detail {text} NOT NULL,
            recorded_at {integer} NOT NULL
        ){table_options}""",
        """CREATE INDEX alarm_transitions_by_alarm
            ON alarm_transitions (alarm_id, ts, action_rank, transition_key)""",
        """CREATE INDEX alarm_transitions_by_time
            ON alarm_transitions (ts, station_id, sensor, kind, transition_key)""",
        """CREATE INDEX alarm_transitions_by_record
            ON alarm_transitions (recorded_at, transition_key)""",
        f"""CREATE TABLE alarms (
            id {text} PRIMARY KEY,
            station_id {text} NOT NULL,
            sensor {text} NOT NULL,
            kind {text} NOT NULL,
            active {integer} NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
            activation_ts {integer},
            cleared_ts {integer},
            severity {integer} NOT NULL DEFAULT 0,
            sensors {text} NOT NULL DEFAULT '[]',
            condition_ts {integer},
            condition_rank {integer},
            condition_key {text},
            acked_activation {integer},
            acked_by {text} NOT NULL DEFAULT '',
            acked_at {integer},
            shelved_until {integer},
            shelved_by {text} NOT NULL DEFAULT '',
            shelving_ts {integer},
            shelving_key {text},
            changed_at {integer} NOT NULL
        ){table_options}""",
        "CREATE INDEX alarms_by_change ON alarms (changed_at DESC, id)",
        "CREATE INDEX alarms_by_station ON alarms (station_id, changed_at DESC, id)",
    )


_LOG_COLUMNS = (
    "transition_key",
    "alarm_id",
    "station_id",
    "sensor",
    "kind",
    "action",
    "action_rank",
    "ts",
    "activation_ts",
    "actor",
    "severity",
    "sensors",
    "comment",
    "until_ts",
    "detail",
    "recorded_at",
)
_READ_LOG = (
    "station_id, sensor, kind, action, ts, activation_ts, actor, severity, sensors, comment, "
    "until_ts, detail, recorded_at"
)
_READ_ROW = (
    "station_id, sensor, kind, active, activation_ts, cleared_ts, severity, sensors, "
    "acked_activation, acked_by, acked_at, shelved_until, shelved_by, changed_at"
)

# Each part: its columns (the time the guard and changed_at use first), and its guard.
_CONDITION = (
    (
        "condition_ts",
        "condition_rank",
        "condition_key",
        "active",
        "activation_ts",
        "cleared_ts",
        "severity",
        "sensors",
    ),
    "alarms.condition_ts IS NULL OR (excluded.condition_ts, excluded.condition_rank, "
    "excluded.condition_key) >= (alarms.condition_ts, alarms.condition_rank, alarms.condition_key)",
)
_ACK = (
    ("acked_at", "acked_activation", "acked_by"),
    "alarms.acked_activation IS NULL OR excluded.acked_activation >= alarms.acked_activation",
)
_SHELVING = (
    ("shelving_ts", "shelving_key", "shelved_until", "shelved_by"),
    "alarms.shelving_ts IS NULL OR "
    "(excluded.shelving_ts, excluded.shelving_key) >= (alarms.shelving_ts, alarms.shelving_key)",
)
_PART_TIMES = ("condition_ts", "acked_at", "shelving_ts")
# A clear keeps the severity and shares of the activation it ends (faultline.store.alarm_rows).
_KEPT_BY_CLEAR = "excluded.active = 0 AND alarms.activation_ts = excluded.activation_ts"


class AlarmWrites:
    """The write statements in one store's spelling."""

    def __init__(self, mark: str, greatest: str) -> None:
        self.insert = (
            f"INSERT INTO alarm_transitions ({', '.join(_LOG_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_LOG_COLUMNS))}) "
            "ON CONFLICT (transition_key) DO NOTHING"
        )
        self.condition, self.ack, self.shelving = (
            _upsert(part, mark, greatest) for part in (_CONDITION, _ACK, _SHELVING)
        )

    def store(
        self,
        execute: Callable[[str, tuple[Any, ...]], int],
        transitions: Sequence[AlarmTransition],
        recorded_at: int,
    ) -> None:
        """Log each transition and update its alarm's row, through `execute` (a statement and
        its parameters; how many rows it changed)."""
        for t in sorted(transitions, key=lambda t: (t.alarm.id, history_order(t))):
            if execute(self.insert, _log_row(t, recorded_at)) and t.action != "comment":
                execute(*self._row_update(t))

    def _row_update(self, t: AlarmTransition) -> Sql:
        alarm = (t.alarm.id, t.alarm.station_id, t.alarm.sensor, t.alarm.kind)
        if t.action == "ack":
            return self.ack, (*alarm, t.ts, t.activation_ts, t.actor, t.ts)
        if t.action in SHELVING:
            shelved = (t.until, t.actor) if t.action == "shelve" else (None, "")
            return self.shelving, (*alarm, t.ts, t.key, *shelved, t.ts)
        active = t.action != "clear"
        return self.condition, (
            *alarm,
            t.ts,
            action_rank(t.action),
            t.key,
            int(active),
            t.activation_ts,
            None if active else t.ts,
            SEVERITIES.index(t.severity),
            _shares_text(t.sensors),
            t.ts,
        )


def _upsert(part: tuple[tuple[str, ...], str], mark: str, greatest: str) -> str:
    columns, guard = part
    since = columns[0]
    others = [f"coalesce(alarms.{c}, excluded.{since})" for c in _PART_TIMES if c != since]
    sets = [
        f"{c} = CASE WHEN {_KEPT_BY_CLEAR} THEN alarms.{c} ELSE excluded.{c} END"
        if c in ("severity", "sensors")
        else f"{c} = excluded.{c}"
        for c in columns
    ]
    sets.append(f"changed_at = {greatest}(excluded.{since}, {', '.join(others)})")
    inserted = ("id", "station_id", "sensor", "kind", *columns)
    # A new row's changed_at is the part's time, given again as the last parameter.
    return (
        f"INSERT INTO alarms ({', '.join(inserted)}, changed_at) "
        f"VALUES ({', '.join([mark] * len(inserted))}, {mark}) "
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(sets)} WHERE {guard}"
    )


def _log_row(t: AlarmTransition, recorded_at: int) -> tuple[Any, ...]:
    a = t.alarm
    return (
        t.key,
        a.id,
        a.station_id,
        a.sensor,
        a.kind,
        t.action,
        action_rank(t.action),
        t.ts,
        t.activation_ts,
        t.actor,
        t.severity,
        _shares_text(t.sensors),
        t.comment,
        t.until,
        t.detail,
        recorded_at,
    )


def _shares_text(sensors: Sequence[tuple[str, float]]) -> str:
    return json.dumps([[name, share] for name, share in sensors], ensure_ascii=False)


def _shares(text: str) -> tuple[tuple[str, float], ...]:
    return tuple((name, float(share)) for name, share in json.loads(text))


_STATES = {
    "active": "active = 1",
    "cleared": "active = 0 AND activation_ts IS NOT NULL",
    "unacknowledged": (
        "activation_ts IS NOT NULL AND (acked_activation IS NULL OR acked_activation <> "
        "activation_ts)"
    ),
    "acknowledged": "acked_activation = activation_ts",
}


def alarms_sql(q: Alarms, m: str) -> Sql:
    where: list[str] = []
    params: list[Any] = []
    if q.station_id is not None:
        where.append(f"station_id = {m}")
        params.append(q.station_id)
    if q.after is not None:
        # The bound on changed_at alone starts the index walk; the rest skips the page's ties.
        where.append(f"changed_at <= {m} AND (changed_at < {m} OR id > {m})")
        params += [q.after[0], q.after[0], q.after[1]]
    if q.since_ms is not None:
        where.append(f"changed_at >= {m}")
        params.append(q.since_ms)
    if q.state == "shelved":
        where.append(f"shelved_until > {m}")
        params.append(q.now_ms)
    elif q.state is not None:
        where.append(_STATES[q.state])
    if q.min_severity is not None:
        where.append(f"severity >= {m}")
        params.append(SEVERITIES.index(q.min_severity))
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    return (
        f"SELECT {_READ_ROW}, id FROM alarms {condition}ORDER BY changed_at DESC, id LIMIT {m}",
        (*params, q.limit + 1),  # one more tells whether a page follows
    )


def alarm_page(q: Alarms, rows: list[tuple[Any, ...]]) -> AlarmPage:
    page = [_alarm_row(row) for row in rows[: q.limit]]
    if len(rows) <= q.limit:
        return AlarmPage(page, None)
    return AlarmPage(page, (page[-1].changed_at, page[-1].state.alarm.id))


def _alarm_row(row: tuple[Any, ...]) -> AlarmRow:
    (station, sensor, kind, active, activation, cleared, severity, sensors, acked_activation,
     acked_by, acked_at, shelved_until, shelved_by, changed_at, _id) = row  # fmt: skip
    condition = Condition(bool(active), activation, cleared, SEVERITIES[severity], _shares(sensors))
    operator = Operator(acked_activation, acked_by, acked_at, shelved_until, shelved_by)
    return AlarmRow(AlarmState(AlarmKey(station, sensor, kind), condition, operator), changed_at)


def alarm_history_sql(q: AlarmHistory, m: str) -> Sql:
    return (
        f"SELECT {_READ_LOG} FROM alarm_transitions WHERE alarm_id = {m} "
        "ORDER BY ts, action_rank, transition_key",
        (q.alarm_id,),
    )


def alarm_transitions_sql(q: AlarmTransitions, m: str) -> Sql:
    actions = ""
    if q.actions:
        actions = f" AND action IN ({', '.join([m] * len(q.actions))})"
    return (
        f"SELECT {_READ_LOG} FROM alarm_transitions WHERE ts >= {m} AND ts < {m}{actions} "
        "ORDER BY ts, station_id, sensor, kind, transition_key",
        (q.start_ms, q.end_ms, *q.actions),
    )


def transition_feed_sql(q: TransitionFeed, m: str) -> Sql:
    after, params = "", tuple[Any, ...]()
    if q.after is not None:
        after, params = f"WHERE (recorded_at, transition_key) > ({m}, {m}) ", tuple(q.after)
    return (
        f"SELECT {_READ_LOG} FROM alarm_transitions {after}"
        f"ORDER BY recorded_at, transition_key LIMIT {m}",
        (*params, q.limit),
    )


def recorded_transition(row: tuple[Any, ...]) -> RecordedTransition:
    (station, sensor, kind, action, ts, activation, actor, severity, sensors, comment, until,
     detail, recorded_at) = row  # fmt: skip
    t = AlarmTransition(
        AlarmKey(station, sensor, kind),
        action,
        ts,
        activation,
        actor=actor,
        severity=severity,
        sensors=_shares(sensors),
        comment=comment,
        until=until,
        detail=detail,
    )
    return RecordedTransition(t, recorded_at)
