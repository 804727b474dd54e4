"""The bus contract: every Bus behaves the same, in memory, in SQLite and on a real Kafka broker.

The Kafka case uses the broker in FAULTLINE_TEST_KAFKA (started by `make test` through
scripts/services/svc.py); without one it skips, or fails when CI=true. The buses that bound
their backlog (memory, SQLite) also pass the bounded contract at the end.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faultline.bus import (
    Bus,
    BusError,
    Consumer,
    IdempotencyConflict,
    MemoryBus,
    Message,
    Published,
    PublishTooLarge,
    Record,
    SqliteBus,
    open_bus,
)
from tests.services.endpoints import require_endpoint

MAX_BYTES = 2 * 1024 * 1024  # the bounded buses' byte limit here: above Kafka's 1 MB records


@pytest.fixture(params=["memory", "sqlite", "kafka"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    if request.param == "memory":
        made: Bus = MemoryBus(max_bytes=MAX_BYTES)
    elif request.param == "sqlite":
        made = SqliteBus(tmp_path / "bus.db", max_bytes=MAX_BYTES, poll_s=0.01)
    else:
        made = open_bus(f"kafka://{require_endpoint('FAULTLINE_TEST_KAFKA')}?partitions=3")
    yield made
    made.close()


BoundedFactory = Callable[[int, int], Bus]


@pytest.fixture(params=["memory", "sqlite"])
def bounded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BoundedFactory]:
    """Makes a bus holding at most (max_messages, max_bytes) unacknowledged per topic."""
    made: list[Bus] = []

    def make(max_messages: int, max_bytes: int) -> Bus:
        if request.param == "memory":
            new: Bus = MemoryBus(max_messages=max_messages, max_bytes=max_bytes)
        else:
            path = tmp_path / f"bus-{len(made)}.db"
            new = SqliteBus(path, max_messages=max_messages, max_bytes=max_bytes, poll_s=0.01)
        made.append(new)
        return new

    yield make
    for each in made:
        each.close()


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


def test_log_id_names_one_log(bus: Bus, topic: str) -> None:
    first = bus.log_id(topic)
    assert isinstance(first, str) and first
    bus.publish(topic, records(keys=1, per_key=3))
    assert bus.log_id(topic) == first
    assert bus.log_id(f"{topic}-other") != first


def test_a_publish_with_one_record_too_large_appends_none(bus: Bus, topic: str) -> None:
    huge = Record(b"x" * (MAX_BYTES + 1), key=b"s0")
    with pytest.raises(PublishTooLarge, match=r"nothing published|send smaller"):
        bus.publish(topic, [Record(b"before", key=b"s0"), huge, Record(b"after", key=b"s0")])
    bus.publish(topic, [Record(b"next", key=b"s0")])
    consumer = bus.consumer(topic, "g")
    assert [m.value for m in drain(consumer, 1)] == [b"next"]
    assert_nothing_more(consumer)
    consumer.close()


def test_a_retried_publish_with_its_key_appends_nothing(bus: Bus, topic: str) -> None:
    sent = records(keys=3, per_key=4)
    assert bus.publish(topic, sent, idempotency_key="req-1") == Published(12)
    assert bus.publish(topic, sent, idempotency_key="req-1") == Published(12, duplicate=True)
    assert bus.publish(topic, sent, idempotency_key="req-2") == Published(12)
    consumer = bus.consumer(topic, "g")
    got = drain(consumer, 24)
    assert sorted(m.value for m in got) == sorted(r.value for r in sent * 2)
    assert_nothing_more(consumer)
    consumer.close()


def test_a_key_used_again_for_other_records_is_refused(bus: Bus, topic: str) -> None:
    bus.publish(topic, [Record(b"first", key=b"s0")], idempotency_key="req")
    with pytest.raises(IdempotencyConflict, match="different records"):
        bus.publish(topic, [Record(b"second", key=b"s0")], idempotency_key="req")
    consumer = bus.consumer(topic, "g")
    assert [m.value for m in drain(consumer, 1)] == [b"first"]
    assert_nothing_more(consumer)
    consumer.close()


def test_concurrent_retries_with_one_key_append_once(bus: Bus, topic: str) -> None:
    sent = records(keys=2, per_key=50)
    results: list[Published] = []

    def retry() -> None:
        results.append(bus.publish(topic, sent, idempotency_key="same"))

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.duplicate for r in results) == [False, True, True, True]
    consumer = bus.consumer(topic, "g")
    assert len(drain(consumer, 100)) == 100
    assert_nothing_more(consumer)
    consumer.close()


# The bounded contract: memory and SQLite hold a bounded backlog (Kafka's is the brokers' disk).


def test_a_full_bus_takes_none_of_a_publish(bounded: BoundedFactory, topic: str) -> None:
    bus = bounded(10, MAX_BYTES)
    bus.publish(topic, records(keys=1, per_key=8))
    with pytest.raises(BusError, match="full") as caught:
        bus.publish(topic, records(keys=1, per_key=3), timeout_s=0.1)
    assert not isinstance(caught.value, PublishTooLarge)  # worth retrying later
    consumer = bus.consumer(topic, "g")
    assert len(consumer.consume(100, timeout_s=0.2)) == 8
    assert_nothing_more(consumer)


def test_bytes_bound_a_topic_as_messages_do(bounded: BoundedFactory, topic: str) -> None:
    bus = bounded(1000, 10_000)
    bus.publish(topic, [Record(b"x" * 4000), Record(b"y" * 4000)])
    with pytest.raises(BusError, match="full"):
        bus.publish(topic, [Record(b"z" * 4000)], timeout_s=0.1)
    consumer = bus.consumer(topic, "g")
    got = consumer.consume(10, timeout_s=0.2)
    consumer.ack(got[:1])  # frees 4000 bytes
    bus.publish(topic, [Record(b"z" * 4000)], timeout_s=1)


def test_more_than_the_bus_holds_is_refused_at_once(bounded: BoundedFactory, topic: str) -> None:
    bus = bounded(5, 1000)
    started = time.monotonic()
    with pytest.raises(PublishTooLarge, match="more than the bus holds"):
        bus.publish(topic, records(keys=1, per_key=6), timeout_s=30)
    with pytest.raises(PublishTooLarge):
        bus.publish(topic, [Record(b"x" * 1001)], timeout_s=30)
    assert time.monotonic() - started < 5  # refused, not waited for
    bus.publish(topic, records(keys=1, per_key=5))


def test_a_waiting_publish_goes_through_once_there_is_room(
    bounded: BoundedFactory, topic: str
) -> None:
    bus = bounded(4, MAX_BYTES)
    consumer = bus.consumer(topic, "g")
    bus.publish(topic, records(keys=1, per_key=3))
    done: list[Published] = []
    producer = threading.Thread(
        target=lambda: done.append(bus.publish(topic, records(keys=2, per_key=1), timeout_s=10))
    )
    producer.start()
    first = consumer.consume(10, timeout_s=1)
    assert len(first) == 3
    consumer.ack(first)
    producer.join(10)
    assert done == [Published(2)]
    assert [m.value for m in drain(consumer, 2)] == [b"s0:0", b"s1:0"]


def test_acknowledged_messages_are_dropped_once_every_group_has_them(
    bounded: BoundedFactory, topic: str
) -> None:
    bus = bounded(5, MAX_BYTES)
    fast, slow = bus.consumer(topic, "fast"), bus.consumer(topic, "slow")
    bus.publish(topic, records(keys=1, per_key=5))
    fast.ack(fast.consume(10, timeout_s=0.2))
    with pytest.raises(BusError, match="full"):  # "slow" still holds all five
        bus.publish(topic, [Record(b"more")], timeout_s=0.1)
    slow.ack(slow.consume(10, timeout_s=0.2))
    bus.publish(topic, records(keys=1, per_key=5), timeout_s=1)
