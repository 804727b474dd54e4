"""`faultline ingest mqtt` as the CLI runs it: `run_mqtt_bridge` from settings, MQTT → Kafka, with
its metrics served over HTTP. Needs FAULTLINE_TEST_MQTT and FAULTLINE_TEST_KAFKA."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
import uuid

from faultline.bus.kafka import KafkaBus
from faultline.config import load_settings
from faultline.ingest.mqtt import run_mqtt_bridge
from tests.ingest.conftest import Publisher, eventually
from tests.services.endpoints import require_endpoint


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The bridge's faultline_mqtt_* samples; none while its server is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith("faultline_mqtt_")
    }


def test_the_command_bridges_mqtt_into_kafka_keyed_by_station(
    broker: str, prefix: str, publisher: Publisher
) -> None:
    kafka = require_endpoint("FAULTLINE_TEST_KAFKA")
    topic = f"mqtt-bridge-{uuid.uuid4().hex[:10]}"
    settings = load_settings(bus_url=f"kafka://{kafka}?partitions=3", readings_topic=topic)
    port = free_port()
    stop = threading.Event()
    bridge = threading.Thread(
        target=run_mqtt_bridge,
        args=(settings,),
        kwargs={
            "broker": f"mqtt://{broker}",
            "topic_filter": f"{prefix}/+/readings",
            "stop": stop,
            "client_id": f"bridge-{prefix}",
            "metrics_port": port,
        },
    )
    bridge.start()
    sent = {f"s-{i:02d}".encode(): [b"%d:%d" % (i, n) for n in range(20)] for i in range(6)}
    try:
        eventually(lambda: scrape(port).get("faultline_mqtt_connected") == 1.0)
        for station, payloads in sent.items():
            publisher.send(f"{prefix}/{station.decode()}/readings", payloads)
        eventually(lambda: scrape(port).get("faultline_mqtt_forwarded_total") == 120)
    finally:
        stop.set()
        bridge.join(30)
    assert not bridge.is_alive()

    bus = KafkaBus(kafka, partitions=3)
    consumer = bus.consumer(topic, "check")
    got: dict[bytes, list[bytes]] = {}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < 120 and time.monotonic() < deadline:
        for message in consumer.consume(500, 1.0):
            assert message.key is not None
            got.setdefault(message.key, []).append(message.value)
    consumer.close()
    bus.close()
    assert got == sent  # every message, keyed by its topic's station, in order per station
