"""The one check every store runs on a batch before it writes anything.

Stores used to differ here: the in-memory and Cassandra stores checked a batch up front while
SQLite and PostgreSQL left part of it (a fault label ending before it starts, text PostgreSQL
cannot hold) to their constraints, so the same bad batch got different messages, and a test of
atomicity could not tell a store that rolled back from one that never started. Now `validate`
refuses every batch that some backend could not store, with one InvalidBatch message, and
returns the batch in the form the stores write from; past it, only the backend itself can fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import get_args

from faultline.alarm_schema import Action, AlarmKey, AlarmKind, AlarmTransition
from faultline.config import SEVERITIES
from faultline.schema import DEAD_LETTER_PAYLOAD_BYTES, WriteBatch
from faultline.store.base import InvalidBatch, QueryError, check_instants
from faultline.store.columns import (
    BatchColumns,
    GlobalAnomalyRow,
    GlobalAnomalyRunRow,
    batch_columns,
    check_faults,
    check_texts,
    dead_letter_fields,
    global_anomaly_rows,
    global_anomaly_run_row,
)

DeadLetterFields = tuple[int, str, str, bytes, str]
"""(received_at, source, reason, payload, kind) of a dead letter to store."""
FaultRow = tuple[str, str, str, int, int]
"""(station_id, sensor, kind, start_ts, end_ts) of a fault label to store."""


@dataclass(frozen=True)
class ValidBatch:
    """A WriteBatch every store can take, taken apart."""

    columns: BatchColumns
    letters: list[DeadLetterFields]
    faults: list[FaultRow]
    anomalies: list[GlobalAnomalyRow]
    run: GlobalAnomalyRunRow | None
    transitions: list[AlarmTransition]
    """The batch's alarm transitions, the first of several with the same key alone, with plain
    int times and float shares."""


def validate(batch: WriteBatch) -> ValidBatch:
    """`batch` checked and taken apart; InvalidBatch, with the same message whatever the store,
    when any part of it cannot be stored."""
    columns = batch_columns(batch)
    letters = dead_letter_fields(batch.dead_letters)
    check_faults(batch.faults)
    anomalies = global_anomaly_rows(batch.global_anomalies)
    run = global_anomaly_run_row(batch, anomalies)
    check_texts("sensor name", batch.sensors)
    check_texts("detector name", batch.detectors)
    for _, source, reason, payload, kind in letters:
        check_texts("dead letter source", (source,), keyed=True)
        check_texts(f"dead letter {source!r}: reason", (reason,))
        check_texts(f"dead letter {source!r}: kind", (kind,))
        if len(payload) > DEAD_LETTER_PAYLOAD_BYTES:
            raise InvalidBatch(
                f"dead letter {source!r} keeps {len(payload)} bytes of payload, more than "
                f"{DEAD_LETTER_PAYLOAD_BYTES}: make it with DeadLetter.of, which keeps a prefix"
            )
    for f in batch.faults:
        check_texts("fault label station_id", (f.station_id,), keyed=True)
        check_texts("fault label sensor", (f.sensor,), keyed=True)
        check_texts("fault label kind", (f.kind,), keyed=True)
    for row in anomalies:
        check_texts("global anomaly station_id", (row[1],), keyed=True)
        check_texts("global anomaly sensor", (row[2],), keyed=True)
    if run is not None:
        check_texts("global-anomaly run skip reason", run[5])
        check_texts("global-anomaly run error", () if run[7] is None else (run[7],))
    faults = [(f.station_id, f.sensor, f.kind, f.start_ts, f.end_ts) for f in batch.faults]
    transitions = alarm_transitions(batch.alarm_transitions)
    return ValidBatch(columns, letters, faults, anomalies, run, transitions)


_ACTIONS: tuple[str, ...] = get_args(Action)
_KINDS: tuple[str, ...] = get_args(AlarmKind)


def alarm_transitions(transitions: Sequence[AlarmTransition]) -> list[AlarmTransition]:
    """The transitions checked (InvalidBatch for one a store cannot hold or fold), the first of
    several with the same key alone, as writing them one after the other would leave."""
    out: dict[str, AlarmTransition] = {}
    for i, t in enumerate(transitions):
        if not isinstance(t, AlarmTransition):
            raise InvalidBatch(
                f"alarm transition #{i} is a {type(t).__name__}, not an AlarmTransition"
            )
        checked = _alarm_transition(i, t)
        out.setdefault(checked.key, checked)
    return list(out.values())


def _alarm_transition(i: int, t: AlarmTransition) -> AlarmTransition:
    alarm = t.alarm
    if not isinstance(alarm, AlarmKey):
        raise InvalidBatch(
            f"alarm transition #{i}: its alarm is a {type(alarm).__name__}, not an AlarmKey"
        )
    check_texts("alarm station_id", (alarm.station_id,), keyed=True)
    check_texts("alarm sensor", (alarm.sensor,), keyed=True)
    if alarm.kind not in _KINDS:
        raise InvalidBatch(
            f"alarm {alarm.id!r}: kind {alarm.kind!r} is not one of {', '.join(_KINDS)}"
        )
    what = f"alarm transition {t.key!r}"
    if t.action not in _ACTIONS:
        raise InvalidBatch(f"{what}: action {t.action!r} is not one of {', '.join(_ACTIONS)}")
    if t.severity not in SEVERITIES:
        raise InvalidBatch(f"{what}: severity {t.severity!r} is not one of {', '.join(SEVERITIES)}")
    times = {"ts": t.ts, "activation_ts": t.activation_ts}
    if t.until is not None:
        times["until"] = t.until
    for name, value in times.items():
        if not isinstance(value, Integral) or isinstance(value, bool):
            raise InvalidBatch(f"{what}: {name} must be an integer (epoch ms), got {value!r}")
        try:
            check_instants(**{name: int(value)})
        except QueryError as exc:
            raise InvalidBatch(f"{what}: {exc}") from None
    check_texts(f"{what}: actor", (t.actor,))
    check_texts(f"{what}: comment", (t.comment,))
    check_texts(f"{what}: detail", (t.detail,))
    return replace(
        t,
        ts=int(t.ts),
        activation_ts=int(t.activation_ts),
        until=None if t.until is None else int(t.until),
        sensors=_shares(what, t.sensors),
    )


def _shares(what: str, sensors: object) -> tuple[tuple[str, float], ...]:
    if not isinstance(sensors, tuple | list) or not all(
        isinstance(pair, tuple | list) and len(pair) == 2 for pair in sensors
    ):
        raise InvalidBatch(f"{what}: sensors must be (sensor, share) pairs, got {sensors!r}")
    shares = []
    for name, share in sensors:
        check_texts(f"{what}: sensor", (name,), keyed=True)
        if not isinstance(share, Real) or isinstance(share, bool) or not math.isfinite(share):
            raise InvalidBatch(
                f"{what}: the share of sensor {name!r} is {share!r}: shares must be finite numbers"
            )
        shares.append((name, float(share)))
    return tuple(shares)
