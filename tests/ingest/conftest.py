"""What the MQTT bridge tests share: a publisher, a running bridge, and bus → engine → SQLite.

The broker is the Mosquitto that `scripts/services/svc.py` started (FAULTLINE_TEST_MQTT); every
test uses its own topic prefix and client ids, so tests never see each other's messages.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from faultline.bus import Bus, MemoryBus, Message
from faultline.codec import ReadingDecoder
from faultline.config import load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine import Engine
from faultline.ingest.mqtt import MqttBridge
from faultline.metrics import Metrics
from faultline.store import DeadLetterCount, Stations, Store, open_store
from tests.services.endpoints import require_endpoint

BUS_TOPIC = "faultline.readings"


def eventually(check: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what or check}")
        time.sleep(0.05)


@pytest.fixture
def broker() -> str:
    """`host:port` of the test Mosquitto."""
    return require_endpoint("FAULTLINE_TEST_MQTT")


@pytest.fixture
def prefix() -> str:
    return f"faultline-test-{uuid.uuid4().hex[:10]}"


class Publisher:
    """A plain MQTT client, as a station would be: QoS 1, waits for the broker's PUBACK."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"station-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(100)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def send(self, topic: str, payloads: list[bytes], retain: bool = False) -> None:
        sent = [self.client.publish(topic, p, qos=1, retain=retain) for p in payloads]
        for info in sent:
            info.wait_for_publish(10)
            assert info.is_published(), f"broker did not acknowledge a message on {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: str) -> Iterator[Publisher]:
    made = Publisher(broker)
    yield made
    made.close()


@contextmanager
def running(bridge: MqttBridge, subscribed: bool = True) -> Iterator[threading.Event]:
    """The bridge running in a thread (subscribed, unless told not to wait for it); stopped,
    and checked stopped, on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), name="mqtt-bridge")
    thread.start()
    try:
        if subscribed:
            assert bridge.subscribed.wait(10), f"bridge not subscribed: {bridge.last_error}"
        yield stop
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the bridge did not stop"


def make_bridge(
    broker: str, topic_filter: str, bus: Bus, metrics: Metrics | None = None, **kw: Any
) -> MqttBridge:
    kw.setdefault("client_id", f"bridge-{uuid.uuid4().hex[:8]}")
    kw.setdefault("session_expiry_s", 60)
    return MqttBridge(f"mqtt://{broker}", topic_filter, bus, BUS_TOPIC, metrics=metrics, **kw)


def everything_on(bus: MemoryBus, group: str = "inspect") -> list[Message]:
    """Every message the bus holds, read by a group of its own (the engine's is unaffected)."""
    consumer = bus.consumer(BUS_TOPIC, group)
    out: list[Message] = []
    while batch := consumer.consume(10_000, 0.05):
        out += batch
    consumer.close()
    return out


@dataclass
class Pipeline:
    """The real engine consuming the bus into a real SQLite store, in a thread."""

    bus: MemoryBus
    store: Store

    def readings(self) -> int:
        return sum(s.readings for s in self.store.query(Stations()))

    def dead_letters(self) -> int:
        return self.store.query(DeadLetterCount())


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    settings = load_settings(
        data_dir=tmp_path, engine={"batch_max_records": 500, "batch_max_wait_s": 0.05}
    )
    bus = MemoryBus()
    # A second group that never acknowledges keeps every message on the bus for inspection.
    bus.consumer(BUS_TOPIC, "inspect").close()
    store = open_store(f"sqlite:///{tmp_path / 'faultline.db'}")
    engine = Engine(
        bus=bus,
        topic=BUS_TOPIC,
        store=store,
        decoder=ReadingDecoder(settings.sensors, settings.ingest),
        pipeline=DetectorPipeline(build_detectors(settings, None)),
        settings=settings.engine,
        metrics=Metrics(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), name="engine")
    thread.start()
    yield Pipeline(bus, store)
    stop.set()
    thread.join(15)
    store.close()
    bus.close()
