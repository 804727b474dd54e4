"""Kafka-specific behaviour of KafkaBus beyond the shared bus contract: its URL, and each way
Kafka can refuse work. Runs against the broker in FAULTLINE_TEST_KAFKA."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from faultline.bus import BusError, Message, PublishTooLarge, Record, open_bus
from faultline.bus.kafka import KafkaBus
from tests.services.endpoints import require_endpoint


@pytest.fixture
def bootstrap() -> str:
    return require_endpoint("FAULTLINE_TEST_KAFKA")


@pytest.fixture
def topic() -> str:
    return f"kafka-bus-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def bus(bootstrap: str) -> Iterator[KafkaBus]:
    made = KafkaBus(bootstrap, partitions=2)
    yield made
    made.close()


def test_the_url_carries_brokers_partitions_and_replication() -> None:
    bus = open_bus("kafka://127.0.0.1:1,127.0.0.1:2?partitions=12&replication=3&client_id=eng")
    assert isinstance(bus, KafkaBus)
    assert (bus.bootstrap, bus.partitions, bus.replication, bus.client_id) == (
        "127.0.0.1:1,127.0.0.1:2",
        12,
        3,
        "eng",
    )


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("kafka://127.0.0.1:1?partitons=3", "unknown option 'partitons'"),
        ("kafka://127.0.0.1:1?partitions=many", "bad value for 'partitions'"),
        ("kafka://127.0.0.1:1?replication=0", "at least 1"),
        ("kafka://?partitions=3", "not a Kafka bus URL"),
    ],
)
def test_a_bad_url_is_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        open_bus(url)


def test_an_unreachable_cluster_fails_the_publish_promptly(topic: str) -> None:
    bus = KafkaBus("127.0.0.1:1", topic_ready_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(BusError, match=r"cannot create topic|not ready"):
        bus.publish(topic, [Record(b"x")])
    assert time.monotonic() - started < 10
    bus.close()


def test_topics_are_created_with_the_configured_partitions(bus: KafkaBus, topic: str) -> None:
    bus.publish(topic, [Record(f"{i}".encode(), key=f"s{i}".encode()) for i in range(50)])
    meta = AdminClient({"bootstrap.servers": bus.bootstrap}).list_topics(topic, timeout=10)
    assert len(meta.topics[topic].partitions) == 2


def test_one_station_stays_in_one_partition(bus: KafkaBus, topic: str) -> None:
    bus.publish(topic, [Record(f"{i}".encode(), key=f"s{i % 7}".encode()) for i in range(140)])
    consumer = bus.consumer(topic, "g")
    got: list[Message] = []
    deadline = time.monotonic() + 30
    while len(got) < 140 and time.monotonic() < deadline:
        got += consumer.consume(140, timeout_s=0.5)
    partitions: dict[bytes | None, set[int]] = {}
    for message in got:
        partitions.setdefault(message.key, set()).add(message.partition)
    assert len(got) == 140
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) == 2  # and keys do spread
    consumer.close()


def test_a_record_the_broker_refuses_fails_the_publish(
    bus: KafkaBus, bootstrap: str, topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    small = NewTopic(
        topic, num_partitions=1, replication_factor=1, config={"max.message.bytes": "1024"}
    )
    admin.create_topics([small])[topic].result()
    with pytest.raises(BusError, match=r"1 of 1 records .* failed: .*too large"):
        bus.publish(topic, [Record(b"x" * 4096)])
    bus.publish(topic, [Record(b"fits")])  # the producer is not poisoned by the refusal


def test_a_record_over_the_producer_limit_is_refused_before_sending(
    bootstrap: str, topic: str
) -> None:
    bus = KafkaBus(bootstrap, producer_config={"message.max.bytes": 2000})
    with pytest.raises(PublishTooLarge, match=r"over the producer's message.max.bytes \(2000\)"):
        bus.publish(topic, [Record(b"fits"), Record(b"x" * 4096)])
    bus.close()


def test_a_full_producer_queue_blocks_then_drains(bootstrap: str, topic: str) -> None:
    bus = KafkaBus(bootstrap, partitions=1, producer_config={"queue.buffering.max.messages": 10})
    bus.publish(topic, [Record(f"{i}".encode()) for i in range(500)])
    consumer = bus.consumer(topic, "g")
    got: list[Message] = []
    deadline = time.monotonic() + 30
    while len(got) < 500 and time.monotonic() < deadline:
        got += consumer.consume(500, timeout_s=0.5)
    assert [m.value for m in got] == [f"{i}".encode() for i in range(500)]
    consumer.close()
    bus.close()


def test_a_producer_queue_that_stays_full_fails_after_the_timeout(
    bootstrap: str, topic: str
) -> None:
    # One queued record that lingers for minutes: the queue never drains during the publish.
    stuck = {"queue.buffering.max.messages": 1, "linger.ms": 60_000, "message.timeout.ms": 120_000}
    bus = KafkaBus(bootstrap, producer_config=stuck)
    started = time.monotonic()
    with pytest.raises(BusError, match="queue full"):
        bus.publish(topic, [Record(b"1"), Record(b"2")], timeout_s=0.5)
    assert time.monotonic() - started < 5
    bus.close()


def test_acknowledging_what_the_topic_does_not_hold_fails(bus: KafkaBus, topic: str) -> None:
    bus.publish(topic, [Record(b"x")])
    consumer = bus.consumer(topic, "g")
    ghost = Message(topic=topic, partition=99, offset=0, timestamp_ms=0, value=b"")
    with pytest.raises(BusError, match="commit"):
        consumer.ack([ghost])
    consumer.close()
    with pytest.raises(BusError, match="closed"):
        consumer.consume(1, 0.1)


def test_a_recreated_topic_has_a_new_log_id(bootstrap: str, topic: str) -> None:
    first = KafkaBus(bootstrap, partitions=1)
    old = first.log_id(topic)
    # The brokers' topic id in Kafka's own form (URL-safe base64 of a UUID, as kafka-topics
    # --describe prints it), not something made up here.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert len(old) == 22
    admin.delete_topics([topic], operation_timeout=30)[topic].result()
    first.close()
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    second = KafkaBus(bootstrap, partitions=1)  # knows nothing of the old topic: creates it
    try:
        assert second.log_id(topic) != old
    finally:
        second.close()
