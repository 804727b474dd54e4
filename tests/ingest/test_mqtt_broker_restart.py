"""The bridge against a Mosquitto that is not there yet, and then restarts under it.

The broker here is a private one, started and stopped with scripts/services/svc.py in this test's
own state directory on a free port, so the servers `make test` started are never disturbed. It
runs when FAULTLINE_TEST_MQTT does (that is how a test run says Mosquitto is available).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from faultline.bus import BusError, MemoryBus, Published, Record
from faultline.metrics import Metrics
from tests.ingest.conftest import (
    Pipeline,
    Publisher,
    eventually,
    everything_on,
    make_bridge,
    running,
)
from tests.ingest.test_mqtt_bridge import reading
from tests.services.endpoints import SVC, require_endpoint

MOSQUITTO_BASE_PORT = 11883  # svc.py's Mosquitto port before its offset


class PrivateBroker:
    def __init__(self, state: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        outer = {k: v for k, v in os.environ.items() if not k.startswith("FAULTLINE_TEST_")}
        self.env = {
            **outer,
            "FAULTLINE_SERVICES_DIR": str(state),
            "FAULTLINE_SERVICES_PORT_OFFSET": str(self.port - MOSQUITTO_BASE_PORT),
        }
        self.address = f"127.0.0.1:{self.port}"

    def svc(self, command: str) -> None:
        done = subprocess.run(
            [sys.executable, str(SVC), command, "mosquitto"],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, f"svc.py {command} mosquitto:\n{done.stdout}{done.stderr}"


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    require_endpoint("FAULTLINE_TEST_MQTT")
    made = PrivateBroker(tmp_path / "services")
    yield made
    made.svc("stop")


def test_the_bridge_waits_for_the_broker_and_survives_its_restart(
    private_broker: PrivateBroker, prefix: str, pipeline: Pipeline
) -> None:
    metrics = Metrics()
    bridge = make_bridge(
        private_broker.address,
        f"{prefix}/+/readings",
        pipeline.bus,
        metrics,
        reconnect_min_s=1,
        reconnect_max_s=2,
    )
    now = int(time.time() * 1000)
    before = [reading("s-01", seq, now) for seq in range(0, 10)]
    after = [reading("s-01", seq, now) for seq in range(10, 20)]

    with running(bridge, subscribed=False):
        time.sleep(1.5)  # the bridge retries a broker that is not up yet
        assert not bridge.subscribed.is_set()
        private_broker.svc("start")
        assert bridge.subscribed.wait(10), bridge.last_error
        first = Publisher(private_broker.address)
        first.send(f"{prefix}/s-01/readings", before)
        first.close()
        eventually(lambda: pipeline.readings() == 10)

        private_broker.svc("stop")
        eventually(lambda: not bridge.subscribed.is_set(), what="the bridge noticing")
        assert metrics.mqtt_connected._value.get() == 0
        private_broker.svc("start")
        assert bridge.subscribed.wait(15), bridge.last_error
        second = Publisher(private_broker.address)
        second.send(f"{prefix}/s-01/readings", after)
        second.close()
        eventually(lambda: pipeline.readings() == 20)

    assert pipeline.dead_letters() == 0
    assert metrics.mqtt_forwarded._value.get() == 20


class GatedBus(MemoryBus):
    """Holds the first publish until `gate` opens; refuses later ones while `down` (a unit-level
    fault injector for a slow, then failing, bus)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.down = False
        self.refused = 0

    def publish(
        self,
        topic: str,
        records: Sequence[Record],
        timeout_s: float = 10.0,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        if not self.holding.is_set():
            self.holding.set()
            self.gate.wait(30)
        elif self.down:
            self.refused += 1
            raise BusError("brokers unreachable")
        return super().publish(topic, records, timeout_s, idempotency_key=idempotency_key)


def test_an_acknowledgement_is_never_sent_over_a_later_connection(
    private_broker: PrivateBroker, prefix: str
) -> None:
    """After a broker restart, packet ids start again: acknowledging a message from the old
    connection on the new one would acknowledge a different, not yet forwarded, message."""
    private_broker.svc("start")
    topic, topic_filter = f"{prefix}/s-01/readings", f"{prefix}/+/readings"
    client_id = f"bridge-{prefix}"
    bus = GatedBus()
    bridge = make_bridge(
        private_broker.address,
        topic_filter,
        bus,
        client_id=client_id,
        reconnect_min_s=1,
        reconnect_max_s=2,
        retry_backoff_s=0.05,
    )
    with running(bridge):
        publisher = Publisher(private_broker.address)
        publisher.send(topic, [b"A"])
        publisher.close()
        assert bus.holding.wait(10)  # A is on its way to the bus, not yet acknowledged

        private_broker.svc("stop")  # the broker forgets the session: packet ids start over
        eventually(lambda: not bridge.subscribed.is_set())
        private_broker.svc("start")
        assert bridge.subscribed.wait(15), bridge.last_error
        bus.down = True
        publisher = Publisher(private_broker.address)
        publisher.send(topic, [b"B"])  # the first message of the new session: A's packet id
        publisher.close()
        eventually(lambda: bridge._queue.qsize() == 1, what="B waiting in the bridge")

        bus.gate.set()  # A reaches the bus; B is refused and stays unacknowledged
        eventually(lambda: bus.refused >= 2)
    assert [m.value for m in everything_on(bus)] == [b"A"]

    later = MemoryBus()
    with running(make_bridge(private_broker.address, topic_filter, later, client_id=client_id)):
        eventually(lambda: len(everything_on(later, "count")) >= 1, what="B delivered again")
    assert [m.value for m in everything_on(later)] == [b"B"]
