"""What the notifier tests share: transitions written into a store at a chosen recorded_at, a
receiver that records what it is sent, and a real local HTTP server that records requests."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from faultline.alarm_schema import ANOMALY, AlarmKey, AlarmTransition
from faultline.config import Severity
from faultline.notify.http import DeliveryError, Rejected
from faultline.notify.receivers import Receiver
from faultline.schema import WriteBatch, empty_readings
from faultline.store import RecordedTransition, Store

SENSORS = ("temperature", "humidity", "noise_level")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, ManualClock's default start
SHARES = (("temperature", 0.75), ("humidity", 0.25))


def alarm(station: str = "s-1", sensor: str = "temperature") -> AlarmKey:
    return AlarmKey(station, sensor, ANOMALY)


def raised(key: AlarmKey, ts: int, severity: Severity = "medium") -> AlarmTransition:
    return AlarmTransition(key, "raise", ts, ts, severity=severity, sensors=SHARES)


def cleared(
    key: AlarmKey, ts: int, activation: int, severity: Severity = "medium"
) -> AlarmTransition:
    return AlarmTransition(key, "clear", ts, activation, severity=severity, sensors=SHARES)


def acked(key: AlarmKey, ts: int, activation: int) -> AlarmTransition:
    return AlarmTransition(key, "ack", ts, activation, actor="ana")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(store: Store, transitions: Sequence[AlarmTransition], recorded_at: int) -> None:
    """Write transitions as one batch does: all with the batch's processed_at."""
    store.write(
        WriteBatch(
            sensors=SENSORS,
            detectors=(),
            readings=empty_readings(SENSORS),
            processed_at=recorded_at,
            alarm_transitions=list(transitions),
        )
    )


class Recorder(Receiver):
    """A receiver that keeps what it was sent; `failures` are raised first, one per send."""

    def __init__(self, name: str = "rec", batch: int = 1) -> None:
        super().__init__(name)
        self.batch = batch
        self.sent: list[RecordedTransition] = []
        self.failures: list[DeliveryError] = []
        self.rejects: set[str] = set()  # keys refused whenever they are in a send

    def send(self, items: Sequence[RecordedTransition]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        if any(i.transition.key in self.rejects for i in items):
            raise Rejected("refused", "rejected")
        self.sent.extend(items)

    @property
    def keys(self) -> list[str]:
        return [i.transition.key for i in self.sent]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Sink:
    """A real HTTP server on loopback that answers `status` and records every request."""

    port: int = 0
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Request]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout_s)
            return list(self.requests)


@contextmanager
def serving(sink: Sink) -> Iterator[Sink]:
    """Serve `sink` on its port (a free one when 0) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with sink.arrived:
                if sink.status < 300:
                    sink.requests.append(Request(self.path, dict(self.headers), body))
                sink.arrived.notify_all()
            self.send_response(sink.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", sink.port), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
