"""What each receiver sends for a transition (a recording stand-in for the HTTP POST)."""

from __future__ import annotations

import json

from faultline.alarm_schema import AlarmState, AlarmTransition, Condition, Operator
from faultline.clock import ManualClock
from faultline.notify import AlertmanagerReceiver, WebhookReceiver, verify
from faultline.store import RecordedTransition
from tests.notify.support import SHARES, T0, acked, alarm, cleared, raised

Sent = list[tuple[str, bytes, dict[str, str], float]]


def recording(sent: Sent):  # type: ignore[no-untyped-def]
    def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        sent.append((url, body, headers, timeout_s))
        return 200

    return post


def test_webhook_signs_each_transition_with_its_key_as_idempotency_key() -> None:
    sent: Sent = []
    clock = ManualClock(T0 + 5000)
    hook = WebhookReceiver("ops", "http://h/x", b"k", 3.0, clock, recording(sent))
    item = RecordedTransition(raised(alarm(), T0), T0 + 100)
    hook.send([item])
    [(url, body, headers, timeout)] = sent
    assert (url, timeout) == ("http://h/x", 3.0)
    assert headers["Idempotency-Key"] == item.transition.key
    assert headers["X-Faultline-Timestamp"] == str(T0 + 5000)
    assert verify(
        b"k", headers["X-Faultline-Timestamp"], body, headers["X-Faultline-Signature"], T0 + 5000
    )
    assert json.loads(body) == {
        "key": item.transition.key,
        "alarm_id": "s-1|temperature|anomaly",
        "station_id": "s-1",
        "sensor": "temperature",
        "kind": "anomaly",
        "action": "raise",
        "ts": T0,
        "activation_ts": T0,
        "severity": "medium",
        "sensors": [{"sensor": s, "share": v} for s, v in SHARES],
        "actor": "engine",
        "comment": "",
        "until": None,
        "recorded_at": T0 + 100,
    }


def test_alertmanager_raise_fires_at_the_severity() -> None:
    sent: Sent = []
    am = AlertmanagerReceiver("am", "http://am:9093/", 2.0, recording(sent))
    a = alarm()
    am.send([RecordedTransition(raised(a, T0, "high"), T0 + 1)])
    [(url, body, _, _)] = sent
    assert url == "http://am:9093/api/v2/alerts"
    [alert] = json.loads(body)
    assert alert["labels"] == {
        "alertname": "FaultlineAlarm",
        "alarm_id": "s-1|temperature|anomaly",
        "station": "s-1",
        "sensor": "temperature",
        "kind": "anomaly",
        "severity": "high",
    }
    assert alert["startsAt"] == "2026-01-01T00:00:00.000Z"
    assert "endsAt" not in alert
    assert alert["annotations"]["faultline_key"] == raised(a, T0, "high").key
    assert alert["annotations"]["sensors"] == "temperature 75%, humidity 25%"


def test_alertmanager_escalation_fires_higher_and_resolves_the_lower_severities() -> None:
    sent: Sent = []
    am = AlertmanagerReceiver("am", "http://am:9093/", 2.0, recording(sent))
    up = AlarmTransition(alarm(), "escalate", T0 + 5000, T0, severity="high", detail="high")
    am.send([RecordedTransition(up, T0 + 5001)])
    alerts = json.loads(sent[0][1])
    assert [(x["labels"]["severity"], x.get("endsAt")) for x in alerts] == [
        ("low", "2026-01-01T00:00:05.000Z"),
        ("medium", "2026-01-01T00:00:05.000Z"),
        ("high", None),
    ]
    assert {x["startsAt"] for x in alerts} == {"2026-01-01T00:00:00.000Z"}


def test_alertmanager_clear_resolves_the_alarm_at_the_clear_time() -> None:
    sent: Sent = []
    am = AlertmanagerReceiver("am", "http://am:9093", 2.0, recording(sent))
    am.send([RecordedTransition(cleared(alarm(), T0 + 60_000, T0), T0 + 60_001)])
    [alert] = json.loads(sent[0][1])
    assert alert["labels"]["severity"] == "medium"
    assert alert["endsAt"] == "2026-01-01T00:01:00.000Z"


def test_alertmanager_is_not_told_operator_actions() -> None:
    am = AlertmanagerReceiver("am", "http://am:9093", 2.0, recording([]))
    assert not am.wants(acked(alarm(), T0 + 1, T0))
    assert am.wants(raised(alarm(), T0))


def test_alertmanager_resend_fires_the_active_alarms() -> None:
    sent: Sent = []
    am = AlertmanagerReceiver("am", "http://am:9093", 2.0, recording(sent))
    active = AlarmState(alarm("s-1"), Condition(True, T0, None, "critical", SHARES), Operator())
    gone = AlarmState(alarm("s-2"), Condition(False, T0, T0 + 5, "low", SHARES), Operator())
    am.resend([active, gone], T0 + 10)
    alerts = json.loads(sent[0][1])
    assert [(x["labels"]["station"], x["labels"]["severity"]) for x in alerts] == [
        ("s-1", "critical")
    ]
    assert "endsAt" not in alerts[0]
