"""Where notifications go: a signed webhook, or Prometheus Alertmanager's v2 API.

A receiver turns recorded transitions into requests and sends them; it raises `Retryable` or
`Rejected` (faultline.notify.http) when that failed, and keeps no state of its own: where a
receiver stands in the log is the notifier's business.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from faultline.alarm_schema import SEVERITIES, AlarmState, AlarmTransition
from faultline.clock import Clock, iso_ms
from faultline.config import ReceiverSettings
from faultline.notify import http
from faultline.store.base import RecordedTransition

CONDITION_ACTIONS = ("raise", "escalate", "clear")

Post = Callable[[str, bytes, dict[str, str], float], int]
"""How a receiver sends: faultline.notify.http.post, or a stand-in in unit tests."""


class Receiver(ABC):
    """One destination. `batch` transitions at most go into one `send`."""

    batch: int = 1

    def __init__(self, name: str) -> None:
        self.name = name

    def wants(self, transition: AlarmTransition) -> bool:
        """Whether this receiver is told about the transition at all."""
        return True

    @abstractmethod
    def send(self, items: Sequence[RecordedTransition]) -> None:
        """Deliver these transitions, in this order; raise Retryable or Rejected when that
        failed (then none of them counts as delivered)."""

    def resend(self, alarms: Sequence[AlarmState], now_ms: int) -> None:  # noqa: B027
        """Tell the receiver again about these active, unshelved alarms (only receivers that
        forget what they are not told again need it)."""

    @property
    def resends(self) -> bool:
        return type(self).resend is not Receiver.resend


def _sensors(transition: AlarmTransition) -> list[dict[str, Any]]:
    return [{"sensor": name, "share": share} for name, share in transition.sensors]


def webhook_body(item: RecordedTransition) -> dict[str, Any]:
    """The JSON a webhook receives for one transition (times in epoch ms UTC)."""
    t = item.transition
    return {
        "key": t.key,
        "alarm_id": t.alarm.id,
        "station_id": t.alarm.station_id,
        "sensor": t.alarm.sensor,
        "kind": t.alarm.kind,
        "action": t.action,
        "ts": t.ts,
        "activation_ts": t.activation_ts,
        "severity": t.severity,
        "sensors": _sensors(t),
        "actor": t.actor,
        "comment": t.comment,
        "until": t.until,
        "recorded_at": item.recorded_at,
    }


class WebhookReceiver(Receiver):
    """POSTs each transition alone as JSON, signed: `X-Faultline-Signature: sha256=<hex HMAC-
    SHA256 of "<X-Faultline-Timestamp>." + body>`, and `Idempotency-Key` = the transition's
    key, the same on every retry, so a receiver can drop what it already has. The timestamp
    (epoch ms) is that of the attempt: a retry is signed anew."""

    batch = 1

    def __init__(
        self,
        name: str,
        url: str,
        secret: bytes,
        timeout_s: float,
        clock: Clock,
        post: Post = http.post,
    ) -> None:
        super().__init__(name)
        self.url = url
        self._secret = secret
        self._timeout_s = timeout_s
        self._clock = clock
        self._post = post

    def send(self, items: Sequence[RecordedTransition]) -> None:
        for item in items:
            body = json.dumps(webhook_body(item), separators=(",", ":")).encode()
            stamp = self._clock.now_ms()
            headers = {
                http.TIMESTAMP_HEADER: str(stamp),
                http.SIGNATURE_HEADER: http.sign(self._secret, stamp, body),
                http.IDEMPOTENCY_HEADER: item.transition.key,
            }
            self._post(self.url, body, headers, self._timeout_s)


ALERTNAME = "FaultlineAlarm"


def alert_labels(station_id: str, sensor: str, kind: str, severity: str) -> dict[str, str]:
    """An alarm's identity at Alertmanager (its labels, which every message about the alarm
    repeats exactly; the severity among them, as Prometheus rules have it)."""
    return {
        "alertname": ALERTNAME,
        "alarm_id": f"{station_id}|{sensor}|{kind}",
        "station": station_id,
        "sensor": sensor,
        "kind": kind,
        "severity": severity,
    }


def _summary(kind: str, station_id: str, sensor: str) -> str:
    what = "stopped sending" if kind == "silent" else "is anomalous"
    where = station_id if sensor == "*" else f"{station_id} {sensor}"
    return f"{where} {what}"


def _share_text(sensors: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in sensors)


class AlertmanagerReceiver(Receiver):
    """Posts alerts to `POST {url}/api/v2/alerts`.

    The severity is a label, so each severity of an alarm is an alert of its own. A raise is
    the alarm firing at its severity (startsAt = activation); an escalation fires it at the new
    severity and resolves it (endsAt = the escalation's time) at every lower one, one of which
    was firing (a transition does not say which; the others appear once as resolved in the
    escalation's notification, if Alertmanager sends resolved ones); a clear resolves it at
    its severity, the activation's highest (endsAt = clear time). Operator transitions are not
    sent: acknowledging and silencing at Alertmanager is Alertmanager's own business. The
    transition key travels in the `faultline_key` annotation (annotations may change between
    messages about one alert, labels may not).
    """

    batch = 50

    def __init__(self, name: str, url: str, timeout_s: float, post: Post = http.post) -> None:
        super().__init__(name)
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self._timeout_s = timeout_s
        self._post = post

    def wants(self, transition: AlarmTransition) -> bool:
        return transition.action in CONDITION_ACTIONS

    def alerts(self, item: RecordedTransition) -> list[dict[str, Any]]:
        t = item.transition
        a = t.alarm
        annotations = {
            "summary": _summary(a.kind, a.station_id, a.sensor),
            "sensors": _share_text(t.sensors),
            "faultline_key": t.key,
            "action": t.action,
        }
        rank = SEVERITIES.index(t.severity)
        resolved = {"raise": (), "escalate": SEVERITIES[:rank], "clear": (t.severity,)}
        out = []
        for severity in resolved[t.action]:
            out.append(self._alert(t, severity, annotations, ends=max(t.ts, t.activation_ts)))
        if t.action != "clear":
            out.append(self._alert(t, t.severity, annotations, ends=None))
        return out

    @staticmethod
    def _alert(
        t: AlarmTransition, severity: str, annotations: dict[str, str], ends: int | None
    ) -> dict[str, Any]:
        a = t.alarm
        alert: dict[str, Any] = {
            "labels": alert_labels(a.station_id, a.sensor, a.kind, severity),
            "annotations": annotations,
            "startsAt": iso_ms(t.activation_ts),
        }
        if ends is not None:
            alert["endsAt"] = iso_ms(ends)
        return alert

    def send(self, items: Sequence[RecordedTransition]) -> None:
        alerts = [alert for item in items for alert in self.alerts(item)]
        if alerts:
            self._post(self.url, json.dumps(alerts).encode(), {}, self._timeout_s)

    def resend(self, alarms: Sequence[AlarmState], now_ms: int) -> None:
        alerts = []
        for state in alarms:
            a, c = state.alarm, state.condition
            if not c.active or c.activation_ts is None:
                continue
            alerts.append(
                {
                    "labels": alert_labels(a.station_id, a.sensor, a.kind, c.severity),
                    "annotations": {
                        "summary": _summary(a.kind, a.station_id, a.sensor),
                        "sensors": _share_text(c.sensors),
                    },
                    "startsAt": iso_ms(c.activation_ts),
                }
            )
        for start in range(0, len(alerts), self.batch):
            chunk = alerts[start : start + self.batch]
            self._post(self.url, json.dumps(chunk).encode(), {}, self._timeout_s)


def build_receiver(settings: ReceiverSettings, clock: Clock, post: Post = http.post) -> Receiver:
    """The receiver a `notify.receivers` entry describes."""
    if settings.kind == "webhook":
        assert settings.secret is not None  # ReceiverSettings refuses a webhook without one
        secret = settings.secret.get_secret_value().encode()
        return WebhookReceiver(settings.name, settings.url, secret, settings.timeout_s, clock, post)
    return AlertmanagerReceiver(settings.name, settings.url, settings.timeout_s, post)
