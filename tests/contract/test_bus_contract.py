"""The bus contract: every Bus behaves the same, in memory and on a real Kafka broker.

The Kafka case uses the broker in FAULTLINE_TEST_KAFKA (started by `make test` through
scripts/services/svc.py); without one it skips, or fails when CI=true.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest

from faultline.bus import Bus, BusError, Consumer, MemoryBus, Message, Record, open_bus
from tests.services.endpoints import require_endpoint


@pytest.fixture(params=["memory", "kafka"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        made: Bus = MemoryBus()
    else:
        made = open_bus(f"kafka://{require_endpoint('FAULTLINE_TEST_KAFKA')}?partitions=3")
    yield made
    made.close()


@pytest.fixture
def topic() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


def drain(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Consume until `count` messages arrived or `timeout_s` passed (Kafka needs a group join)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got += consumer.consume(count - len(got), timeout_s=0.5)
    return got


def records(keys: int, per_key: int) -> list[Record]:
    """Interleaved keys, each with an increasing sequence number in its value."""
    return [
        Record(value=f"s{k}:{seq}".encode(), key=f"s{k}".encode())
        for seq in range(per_key)
        for k in range(keys)
    ]


def test_each_key_arrives_in_publish_order(bus: Bus, topic: str) -> None:
    bus.publish(topic, records(keys=5, per_key=40))
    consumer = bus.consumer(topic, "g")
    got = drain(consumer, 200)
    assert len(got) == 200
    assert_nothing_more(consumer)
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for message in got:
        key, seq = message.value.decode().split(":")
        assert message.key == key.encode()
        by_key[message.key].append(int(seq))
    assert dict(by_key) == {f"s{k}".encode(): list(range(40)) for k in range(5)}
    consumer.close()


def test_messages_say_where_and_when_the_bus_stored_them(bus: Bus, topic: str) -> None:
    before = time.time_ns() // 1_000_000
    bus.publish(topic, records(keys=3, per_key=10))
    after = time.time_ns() // 1_000_000
    consumer = bus.consumer(topic, "g")
    got = drain(consumer, 30)
    assert len(got) == 30
    assert len({(m.partition, m.offset) for m in got}) == 30
    for message in got:
        assert message.topic == topic
        assert message.source == f"{topic}/{message.partition}/{message.offset}"
        # The broker's clock, not ours: allow a little skew either side.
        assert before - 1000 <= message.timestamp_ms <= after + 1000
    consumer.close()


def assert_nothing_more(consumer: Consumer) -> None:
    """Called once the consumer has received messages, so it owns its partitions: anything
    still due would arrive within this wait."""
    assert consumer.consume(100, timeout_s=1.0) == []


def test_a_new_consumer_resumes_after_what_the_group_acknowledged(bus: Bus, topic: str) -> None:
    bus.publish(topic, records(keys=4, per_key=10))
    first = bus.consumer(topic, "g")
    got = drain(first, 40)
    assert len(got) == 40
    acked, rest = got[:15], got[15:]
    first.ack(acked)
    first.close()

    second = bus.consumer(topic, "g")
    # Acknowledging is per partition up to the highest offset; what was consumed after the acked
    # prefix is exactly what comes again.
    resumed = drain(second, len(rest))
    assert sorted(m.value for m in resumed) == sorted(m.value for m in rest)
    assert_nothing_more(second)
    second.close()


def test_unacknowledged_messages_go_to_the_next_consumer_of_the_group(bus: Bus, topic: str) -> None:
    bus.publish(topic, records(keys=2, per_key=10))
    first = bus.consumer(topic, "g")
    assert len(drain(first, 20)) == 20
    first.close()  # dies without acknowledging

    second = bus.consumer(topic, "g")
    again = drain(second, 20)
    assert sorted(m.value for m in again) == sorted(r.value for r in records(2, 10))
    second.ack(again)
    second.close()

    bus.publish(topic, [Record(b"after", key=b"s0")])
    third = bus.consumer(topic, "g")
    assert [m.value for m in drain(third, 1)] == [b"after"]
    assert_nothing_more(third)
    third.close()


def test_every_group_gets_every_message(bus: Bus, topic: str) -> None:
    consumers = [bus.consumer(topic, group) for group in ("dashboard", "engine")]
    sent = records(keys=3, per_key=5)
    bus.publish(topic, sent)
    for consumer in consumers:
        got = drain(consumer, len(sent))
        assert sorted(m.value for m in got) == sorted(r.value for r in sent)
        consumer.ack(got)
        assert_nothing_more(consumer)
        consumer.close()


def test_consume_on_an_idle_topic_returns_nothing_after_the_timeout(bus: Bus, topic: str) -> None:
    consumer = bus.consumer(topic, "g")
    started = time.monotonic()
    assert consumer.consume(10, timeout_s=0.3) == []
    assert time.monotonic() - started < 2.0
    consumer.close()


def test_consume_returns_at_most_max_messages(bus: Bus, topic: str) -> None:
    bus.publish(topic, records(keys=1, per_key=50))
    consumer = bus.consumer(topic, "g")
    got: list[Message] = []
    deadline = time.monotonic() + 30
    while len(got) < 50 and time.monotonic() < deadline:
        batch = consumer.consume(7, timeout_s=0.5)
        assert len(batch) <= 7
        got += batch
    assert [m.value for m in got] == [r.value for r in records(1, 50)]
    consumer.close()


def test_a_large_batch_arrives_whole_and_once(bus: Bus, topic: str) -> None:
    sent = records(keys=25, per_key=800)  # 20,000 records in one publish
    bus.publish(topic, sent, timeout_s=60)
    consumer = bus.consumer(topic, "g")
    seen: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(seen) < len(sent) and time.monotonic() < deadline:
        batch = consumer.consume(5000, timeout_s=0.5)
        assert not seen.intersection(m.value for m in batch), "a message came twice"
        seen.update(m.value for m in batch)
        consumer.ack(batch)
    assert len(seen) == len(sent)
    assert_nothing_more(consumer)
    consumer.close()


def test_a_closed_bus_refuses_to_publish(bus: Bus, topic: str) -> None:
    bus.close()
    with pytest.raises(BusError):
        bus.publish(topic, [Record(b"late")])


def test_a_log_keeps_its_id_and_a_recreated_one_gets_another(bus: Bus, topic: str) -> None:
    bus.publish(topic, records(keys=1, per_key=1))
    first = bus.log_id(topic)
    assert first and bus.log_id(topic) == first
    if isinstance(bus, MemoryBus):
        # A memory log is gone with its bus: the next bus's log is another one.
        assert MemoryBus().log_id(topic) != first
    else:
        from faultline.bus.kafka import KafkaBus

        assert isinstance(bus, KafkaBus)
        bus._admin.delete_topics([topic])[topic].result()
        bus._known_topics.discard(topic)
        deadline = time.monotonic() + 30
        while True:
            try:
                recreated = bus.log_id(topic)
                break
            except BusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert recreated != first
