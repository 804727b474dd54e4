"""A real Alertmanager receives an alarm with its labels, then its resolution.

`test_alertmanager_notifies_the_alarm_and_its_resolution` starts an Alertmanager of its own
(Debian's prometheus-alertmanager, on a free loopback port) whose route sends every
notification, resolved ones too, to a webhook of the test; the other tests use the one
`scripts/services/svc.py` started (FAULTLINE_TEST_ALERTMANAGER). Without Alertmanager they
skip, or fail when CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultline.alarm_schema import AlarmState
from faultline.alarms import apply, shelve
from faultline.clock import SystemClock, iso_ms
from faultline.config import NotifySettings
from faultline.metrics import Metrics
from faultline.notify import AlertmanagerReceiver, Notifier
from faultline.notify.http import post
from faultline.store.memory import MemoryStore
from tests.notify.support import (
    SENSORS,
    Sink,
    alarm,
    cleared,
    free_port,
    raised,
    record,
    serving,
)
from tests.services.endpoints import missing, require_endpoint

BINARY = Path("/usr/bin/prometheus-alertmanager")
SETTINGS = NotifySettings(margin_s=5, resend_s=60)


def alerts(base: str, station: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds (active ones: it lists no resolved alert) of a station."""
    query = urllib.parse.urlencode({"filter": f'station="{station}"'})
    with urllib.request.urlopen(f"{base}/api/v2/alerts?{query}", timeout=5) as reply:
        return json.load(reply)


def eventually(check, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns something true; that value (the last one at the end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture
def own_alertmanager(tmp_path: Path) -> Iterator[tuple[str, Sink]]:
    """An Alertmanager of this test whose every notification goes to a local webhook."""
    binary = shutil.which("prometheus-alertmanager") or str(BINARY)
    if not Path(binary).exists():
        missing("prometheus-alertmanager not installed (scripts/install-system-deps.sh)")
    with serving(Sink()) as sink:
        port = free_port()
        config = tmp_path / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: test\n"
            "  group_by: [alarm_id]\n"
            "  group_wait: 0s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: test\n"
            "    webhook_configs:\n"
            f"      - url: http://127.0.0.1:{sink.port}/am\n"
            "        send_resolved: true\n"
        )
        log = (tmp_path / "alertmanager.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                try:
                    with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as reply:
                        return reply.status == 200
                except OSError:
                    return proc.poll() is not None  # exited: stop waiting, fail below

            eventually(ready)
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
            yield base, sink
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


def notifications(sink: Sink, station: str) -> list[tuple[str, dict[str, Any]]]:
    """(status, alert) of every alert Alertmanager notified about the station."""
    out = []
    for request in sink.requests:
        body = request.json()
        assert isinstance(body, dict)
        out += [(a["status"], a) for a in body["alerts"] if a["labels"]["station"] == station]
    return out


def test_alertmanager_notifies_the_alarm_and_its_resolution(
    own_alertmanager: tuple[str, Sink],
) -> None:
    base, sink = own_alertmanager
    store, clock = MemoryStore(), SystemClock()
    receiver = AlertmanagerReceiver("am", base, timeout_s=5)
    notifier = Notifier(receiver, store, SETTINGS, SENSORS, Metrics(), clock)
    notifier.step()
    station = f"am-{uuid.uuid4().hex[:8]}"
    a = alarm(station)
    start = clock.now_ms()
    record(store, [raised(a, start, "high")], start)
    notifier.step()

    [held] = eventually(lambda: alerts(base, station))
    assert held["labels"] == {
        "alertname": "FaultlineAlarm",
        "alarm_id": f"{station}|temperature|anomaly",
        "station": station,
        "sensor": "temperature",
        "kind": "anomaly",
        "severity": "high",
    }
    assert held["startsAt"] == iso_ms(start)
    assert held["annotations"]["faultline_key"] == raised(a, start, "high").key
    assert held["status"]["state"] == "active"
    assert eventually(lambda: ("firing", held["labels"]) in [
        (s, x["labels"]) for s, x in notifications(sink, station)
    ])  # fmt: skip

    end = clock.now_ms()
    record(store, [cleared(a, end, start, "high")], end)
    notifier.step()
    resolved = eventually(lambda: [x for s, x in notifications(sink, station) if s == "resolved"])
    assert [x["labels"] for x in resolved] == [held["labels"]]
    assert resolved[0]["endsAt"] == iso_ms(end)
    assert alerts(base, station) == []


def test_active_alarms_are_sent_again_and_shelved_ones_are_not() -> None:
    """Alertmanager forgets an alert not sent again within resolve_timeout: the notifier sends
    the active, unshelved alarms every resend_s."""
    base = require_endpoint("FAULTLINE_TEST_ALERTMANAGER")
    store, clock = MemoryStore(), SystemClock()
    posted: list[list[dict[str, Any]]] = []

    def observed(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        posted.append(json.loads(body))
        return post(url, body, headers, timeout_s)

    receiver = AlertmanagerReceiver("am", base, timeout_s=5, post=observed)
    notifier = Notifier(receiver, store, NotifySettings(resend_s=0.001), SENSORS, Metrics(), clock)
    notifier.step()
    station = f"am-{uuid.uuid4().hex[:8]}"
    kept, shelved = alarm(station, "temperature"), alarm(station, "humidity")
    now = clock.now_ms()
    record(store, [raised(kept, now), raised(shelved, now)], now)
    notifier.step()
    assert {x["labels"]["sensor"] for x in alerts(base, station)} == {"temperature", "humidity"}

    state = apply(AlarmState(shelved), raised(shelved, now))
    _, shelving = shelve(state, "ana", now + 1, now + 3_600_000, max_shelve_ms=86_400_000)
    record(store, [shelving], now + 1)
    posted.clear()
    time.sleep(0.01)
    notifier.step()
    resent = [x["labels"]["sensor"] for body in posted for x in body if "endsAt" not in x]
    assert resent == ["temperature"]
