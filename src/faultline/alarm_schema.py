"""The shapes alarms take between layers (faultline.alarms makes them; stores and the API will
keep and serve them).

An alarm in the ISA-18.2 sense has two parts that never overwrite each other: the *condition*
(active or cleared, its severity and the sensors responsible), which only the engine changes,
and the *operator* part (acknowledgement, shelving, comments), which only people change. Every
change of either part is an `AlarmTransition` with a deterministic key, so a replayed batch
yields the same keys and a store can drop what it already holds. Times are epoch ms UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from faultline.config import SEVERITIES, Severity

AlarmKind = Literal["anomaly", "silent"]
ANOMALY: AlarmKind = "anomaly"  # the station's detector verdicts
SILENT: AlarmKind = "silent"  # the station stopped sending
STATION_WIDE = "*"  # the sensor of an alarm about the whole station

EngineAction = Literal["raise", "escalate", "clear"]
OperatorAction = Literal["ack", "shelve", "unshelve", "comment"]
Action = Literal["raise", "escalate", "clear", "ack", "shelve", "unshelve", "comment"]
ENGINE = "engine"  # the actor of every condition transition

SensorShare = tuple[str, float]  # a responsible sensor and its share of the condition's score


def severity_rank(severity: Severity) -> int:
    """0 for low up to 3 for critical."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True, order=True)
class AlarmKey:
    """What one alarm is about: a station, a sensor (or STATION_WIDE) and a kind."""

    station_id: str
    sensor: str
    kind: AlarmKind

    @property
    def id(self) -> str:
        return f"{self.station_id}|{self.sensor}|{self.kind}"


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One change of one alarm.

    `activation_ts` names the activation (the ongoing or last condition) the change belongs to;
    `key` is unique per change and the same however often the input is replayed:
    `station|sensor|kind|activation_ts|action[|detail]`. Condition transitions carry the
    severity and responsible sensors as of the change; operator ones their actor, comment and,
    for shelving, `until`.
    """

    alarm: AlarmKey
    action: Action
    ts: int
    activation_ts: int
    actor: str = ENGINE
    severity: Severity = "low"
    sensors: tuple[SensorShare, ...] = ()
    comment: str = ""
    until: int | None = None
    detail: str = ""  # disambiguates repeated actions within one activation (see `key`)

    @property
    def key(self) -> str:
        base = f"{self.alarm.id}|{self.activation_ts}|{self.action}"
        return f"{base}|{self.detail}" if self.detail else base


@dataclass(frozen=True, slots=True)
class Condition:
    """The engine's part: the latest activation (None: never active) and whether it holds."""

    active: bool = False
    activation_ts: int | None = None
    cleared_ts: int | None = None
    severity: Severity = "low"
    sensors: tuple[SensorShare, ...] = ()


@dataclass(frozen=True, slots=True)
class Comment:
    ts: int
    actor: str
    text: str


@dataclass(frozen=True, slots=True)
class Operator:
    """The people's part. `acked_activation` is the activation an acknowledgement was for, so a
    new activation is unacknowledged without the engine touching this part; shelving lasts
    until `shelved_until` and then ends by itself."""

    acked_activation: int | None = None
    acked_by: str = ""
    acked_at: int | None = None
    shelved_until: int | None = None
    shelved_by: str = ""
    comments: tuple[Comment, ...] = ()


@dataclass(frozen=True, slots=True)
class AlarmState:
    """One alarm: its key and its two parts."""

    alarm: AlarmKey
    condition: Condition = Condition()
    operator: Operator = Operator()

    @property
    def acknowledged(self) -> bool:
        """Whether the latest activation has been acknowledged (a never-active alarm has none)."""
        c = self.condition
        return c.activation_ts is not None and self.operator.acked_activation == c.activation_ts

    def shelved(self, now_ms: int) -> bool:
        until = self.operator.shelved_until
        return until is not None and now_ms < until


def transition_to_json(t: AlarmTransition) -> dict[str, Any]:
    """A transition as plain JSON values (the Spark job's rows carry it so)."""
    return {
        "station_id": t.alarm.station_id,
        "sensor": t.alarm.sensor,
        "kind": t.alarm.kind,
        "action": t.action,
        "ts": t.ts,
        "activation_ts": t.activation_ts,
        "actor": t.actor,
        "severity": t.severity,
        "sensors": [[name, share] for name, share in t.sensors],
        "comment": t.comment,
        "until": t.until,
        "detail": t.detail,
    }


def transition_from_json(data: Mapping[str, Any]) -> AlarmTransition:
    """The inverse of `transition_to_json`; ValueError when `data` is not one."""
    try:
        return AlarmTransition(
            AlarmKey(str(data["station_id"]), str(data["sensor"]), data["kind"]),
            data["action"],
            int(data["ts"]),
            int(data["activation_ts"]),
            actor=str(data["actor"]),
            severity=data["severity"],
            sensors=tuple((str(name), float(share)) for name, share in data["sensors"]),
            comment=str(data["comment"]),
            until=None if data["until"] is None else int(data["until"]),
            detail=str(data["detail"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an alarm transition: {exc!r}") from exc
