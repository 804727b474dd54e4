"""MQTT → bridge → bus → the real engine → SQLite, against the real Mosquitto in
FAULTLINE_TEST_MQTT: what arrives, what becomes a dead letter and why, and that nothing is lost."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence

import msgspec

from faultline.bus import BusError, MemoryBus, Published, Record
from faultline.codec import encode_reading
from faultline.metrics import Metrics
from faultline.store import DeadLetters
from tests.fuzz import corpus, rejected
from tests.ingest.conftest import (
    BUS_TOPIC,
    Pipeline,
    Publisher,
    eventually,
    everything_on,
    make_bridge,
    running,
)

STATIONS = ("s-01", "s-02", "s-03")


def reading(station: str, seq: int, now: int, **values: float) -> bytes:
    sensors = {"temperature": 25.0 + seq % 3, "humidity": 60.0, "noise_level": 50.0}
    return encode_reading(station, now - 1000 * (20 - seq), seq, {**sensors, **values})


def test_readings_are_stored_and_bad_payloads_dead_lettered_with_their_reasons(
    broker: str, prefix: str, publisher: Publisher, pipeline: Pipeline
) -> None:
    metrics = Metrics()
    bridge = make_bridge(
        broker, f"{prefix}/+/readings", pipeline.bus, metrics, max_payload_bytes=2048
    )
    now = int(time.time() * 1000)
    good = {s: [reading(s, seq, now) for seq in range(10)] for s in STATIONS}
    seed_form = json.dumps(
        {"station_id": "s-04", "temperature": 25.0, "humidity": 60.0, "noise_level": 50.0}
    ).encode()
    # A well-formed reading made too big by a field nobody reads: cut by the bridge.
    oversize = reading("s-03", 50, now)[:-1] + b',"note":"' + b"x" * 5000 + b'"}'
    bad = {
        "s-01": b'{"station_id": "s-01", "values": {"temperature": 2',
        "s-02": reading("s-02", 60, now, humidity=150.0),
        "s-03": msgspec.json.encode(
            {"station_id": "s-03", "ts": now, "seq": 61, "values": {"pressure": 1013.0}}
        ),
    }

    with running(bridge):
        for station in STATIONS:
            publisher.send(f"{prefix}/{station}/readings", good[station] + [bad[station]])
        publisher.send(f"{prefix}/s-04/readings", [seed_form])
        publisher.send(f"{prefix}/s-03/readings", [oversize])
        publisher.send(f"{prefix}/s-01/status", [b"not for the bridge"])
        sent = 3 * 11 + 2

        eventually(
            lambda: pipeline.readings() + pipeline.dead_letters() == sent,
            what="every forwarded message stored as a reading or a dead letter",
        )

    assert pipeline.readings() == 31
    letters = pipeline.store.query(DeadLetters(limit=100))
    kinds = Counter(letter.kind for letter in letters)
    assert kinds == {"malformed": 2, "range": 1, "sensor": 1}
    reasons = " | ".join(letter.reason for letter in letters)
    assert "humidity=150 outside physical range" in reasons
    assert "unknown sensor 'pressure'" in reasons
    assert {letter.payload for letter in letters} >= {bad["s-01"], bad["s-02"], bad["s-03"]}
    cut = [letter for letter in letters if len(letter.payload) == 2048]
    assert len(cut) == 1 and oversize.startswith(cut[0].payload)
    assert metrics.mqtt_truncated._value.get() == 1
    assert metrics.mqtt_forwarded._value.get() == sent

    on_bus = everything_on(pipeline.bus)
    assert len(on_bus) == sent  # the status topic was not forwarded, nothing else was lost
    by_payload = {m.value: m.key for m in on_bus}
    for station in STATIONS:
        assert {by_payload[p] for p in good[station]} == {station.encode()}
    assert by_payload[bad["s-01"]] == b"s-01"  # keyed by topic, whatever the payload holds
    assert by_payload[seed_form] == b"s-04"


def test_without_a_station_level_the_payload_names_the_key(
    broker: str, prefix: str, publisher: Publisher
) -> None:
    bus = MemoryBus()
    bridge = make_bridge(broker, f"{prefix}/#", bus)
    named = reading("s-07", 1, int(time.time() * 1000))
    with running(bridge):
        publisher.send(f"{prefix}/line-4/s-07", [named, b"garbage"])
        eventually(lambda: len(everything_on(bus, "count")) == 2)
    assert {m.value: m.key for m in everything_on(bus)} == {named: b"s-07", b"garbage": None}


class FlakyBus(MemoryBus):
    """Refuses the first `failures` publishes, then works (a unit-level fault injector)."""

    def __init__(self, failures: float) -> None:
        super().__init__()
        self.failures = failures
        self.refused = 0

    def publish(
        self,
        topic: str,
        records: Sequence[Record],
        timeout_s: float = 10.0,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        if self.refused < self.failures:
            self.refused += 1
            raise BusError("brokers unreachable")
        return super().publish(topic, records, timeout_s, idempotency_key=idempotency_key)


def test_messages_the_bus_refused_stay_with_the_broker_until_a_bridge_delivers_them(
    broker: str, prefix: str, publisher: Publisher
) -> None:
    """At-least-once: a message is acknowledged to the broker only once the bus took it."""
    topic_filter = f"{prefix}/+/readings"
    client_id = f"bridge-{prefix}"
    down = FlakyBus(failures=math.inf)
    metrics = Metrics()
    first = make_bridge(
        broker, topic_filter, down, metrics, client_id=client_id, retry_backoff_s=0.05
    )
    before = [b"before-%d" % i for i in range(5)]
    while_away = [b"away-%d" % i for i in range(5)]

    with running(first):
        publisher.send(f"{prefix}/s-01/readings", before)
        eventually(lambda: down.refused >= 3, what="the bridge retrying the refused batch")
        assert metrics.mqtt_forwarded._value.get() == 0
    assert metrics.mqtt_bus_failures._value.get() >= 3

    publisher.send(f"{prefix}/s-01/readings", while_away)  # the session queues these

    up = MemoryBus()
    with running(make_bridge(broker, topic_filter, up, client_id=client_id)):
        eventually(lambda: len(everything_on(up, "count")) >= 10)
    assert sorted(m.value for m in everything_on(up)) == sorted(before + while_away)

    # Delivered and acknowledged: the session has nothing left to give.
    again = MemoryBus()
    with running(make_bridge(broker, topic_filter, again, client_id=client_id)):
        time.sleep(0.5)
    assert everything_on(again) == []


def test_retained_messages_are_not_replayed_on_subscribe(
    broker: str, prefix: str, publisher: Publisher
) -> None:
    topic = f"{prefix}/s-01/readings"
    publisher.send(topic, [b"stale, retained"], retain=True)
    bus = MemoryBus()
    try:
        with running(make_bridge(broker, f"{prefix}/+/readings", bus)):
            publisher.send(topic, [b"live"])
            eventually(lambda: len(everything_on(bus, "count")) >= 1)
            time.sleep(0.3)
        assert [m.value for m in everything_on(bus)] == [b"live"]
    finally:
        publisher.send(topic, [b""], retain=True)  # an empty retained message clears it


def test_a_refused_batch_is_retried_whole_keeping_the_station_order(
    broker: str, prefix: str, publisher: Publisher
) -> None:
    """Batches are retried whole, so a station's readings reach the bus in publish order."""
    bus = FlakyBus(failures=2)
    bridge = make_bridge(broker, f"{prefix}/+/readings", bus, retry_backoff_s=0.05)
    payloads = [b"%d" % i for i in range(200)]
    with running(bridge):
        publisher.send(f"{prefix}/s-01/readings", payloads)
        eventually(lambda: len(everything_on(bus, "count")) >= 200)
    assert [m.value for m in everything_on(bus)] == payloads
    assert bus.refused == 2


def test_a_fuzz_corpus_over_mqtt_becomes_dead_letters_and_the_stream_goes_on(
    broker: str, prefix: str, publisher: Publisher, pipeline: Pipeline
) -> None:
    bridge = make_bridge(broker, f"{prefix}/+/readings", pipeline.bus)
    now = int(time.time() * 1000)
    bad = rejected(corpus(40), now)
    after = [reading("s-09", seq, now) for seq in range(3)]

    with running(bridge):
        publisher.send(f"{prefix}/s-09/readings", [*bad, *after])
        eventually(
            lambda: pipeline.readings() == 3 and pipeline.dead_letters() == len(bad),
            timeout_s=60,
            what=f"{len(bad)} dead letters, then the 3 good readings",
        )
    assert len(bad) > 100


def test_a_batch_larger_than_the_bus_holds_is_published_in_parts(
    broker: str, prefix: str, publisher: Publisher
) -> None:
    bus = MemoryBus(max_messages=4)  # the bridge batches up to 50: a whole batch never fits
    engine = bus.consumer(BUS_TOPIC, "engine")
    taken: list[bytes] = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            batch = engine.consume(10, timeout_s=0.05)
            engine.ack(batch)
            taken.extend(m.value for m in batch)

    drainer = threading.Thread(target=drain)
    drainer.start()
    sent = [b"m-%d" % i for i in range(20)]
    bridge = make_bridge(broker, f"{prefix}/+/readings", bus, batch_max_records=50)
    try:
        with running(bridge):
            publisher.send(f"{prefix}/s-01/readings", sent)
            eventually(lambda: len(taken) >= 20, what="all 20 forwarded")
    finally:
        stop.set()
        drainer.join(5)
    assert sorted(taken) == sorted(sent)
