"""A webhook receiver that refuses connections, then comes back, gets everything: signed, in
order, each transition with its key as Idempotency-Key. The notifier runs in its worker thread
against a real local HTTP server; waits are for events, never for a time."""

from __future__ import annotations

import socket
import threading
import time

from faultline.clock import SystemClock
from faultline.config import NotifySettings
from faultline.metrics import Metrics
from faultline.notify import Notifier, WebhookReceiver, verify
from faultline.store.memory import MemoryStore
from tests.notify.support import SENSORS, Sink, acked, alarm, cleared, raised, record, serving

SECRET = b"webhook-secret"
SETTINGS = NotifySettings(margin_s=5, backoff_initial_s=0.05, backoff_max_s=0.4, poll_s=0.05)


def wait_until(check, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_receiver_down_then_up_gets_everything_signed_and_in_order() -> None:
    store, clock, metrics = MemoryStore(), SystemClock(), Metrics()
    refusing = socket.socket()  # bound, not listening: connections are refused
    refusing.bind(("127.0.0.1", 0))
    port = refusing.getsockname()[1]
    hook = WebhookReceiver("ops", f"http://127.0.0.1:{port}/hook", SECRET, 2.0, clock)
    notifier = Notifier(hook, store, SETTINGS, SENSORS, metrics, clock)
    notifier.step()  # its position: the present

    now = clock.now_ms()
    sent = []
    for i in range(5):
        a = alarm(f"wh-{i}")
        batch = [
            raised(a, now + i),
            acked(a, now + i + 1, now + i),
            cleared(a, now + i + 2, now + i),
        ]
        record(store, batch, now + i)
        sent += batch
    stop = threading.Event()
    worker = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    worker.start()

    def failures() -> float:
        labels = {"receiver": "ops", "reason": "network"}
        return (
            metrics.registry.get_sample_value("faultline_notification_failures_total", labels) or 0
        )

    try:
        assert wait_until(lambda: failures() >= 3), "the notifier did not retry"
        assert metrics.registry.get_sample_value(
            "faultline_notifier_backlog", {"receiver": "ops"}
        ) == len(sent)
        refusing.close()
        with serving(Sink(port=port)) as sink:
            requests = sink.wait_for(len(sent))
            stop.set()
            worker.join(10)
    finally:
        stop.set()
        refusing.close()

    got = [r.json() for r in requests]
    assert [g["key"] for g in got] == [t.key for t in sent]  # type: ignore[index]
    for request in requests:
        stamp = request.headers["X-Faultline-Timestamp"]
        assert verify(
            SECRET, stamp, request.body, request.headers["X-Faultline-Signature"], clock.now_ms()
        )
        assert request.headers["Idempotency-Key"] == request.json()["key"]  # type: ignore[index]
    assert metrics.registry.get_sample_value(
        "faultline_notifications_delivered_total", {"receiver": "ops"}
    ) == len(sent)
    assert metrics.registry.get_sample_value("faultline_notifier_backlog", {"receiver": "ops"}) == 0
