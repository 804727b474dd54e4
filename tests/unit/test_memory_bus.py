"""Memory-bus behaviour beyond the shared bus contract: bounded capacity and backpressure."""

from __future__ import annotations

import threading

import pytest

from faultline.bus import BusError, MemoryBus, Record


def test_publish_blocks_while_full_then_fails_after_the_timeout() -> None:
    bus = MemoryBus(capacity=3)
    bus.publish("t", [Record(b"1"), Record(b"2"), Record(b"3")])
    with pytest.raises(BusError, match="full"):
        bus.publish("t", [Record(b"4")], timeout_s=0.05)


def test_backpressure_releases_when_the_consumer_acknowledges() -> None:
    bus = MemoryBus(capacity=2)
    consumer = bus.consumer("t", "g")
    done = threading.Event()

    def produce() -> None:
        bus.publish("t", [Record(str(i).encode()) for i in range(6)], timeout_s=5)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    received: list[bytes] = []
    while len(received) < 6:
        batch = consumer.consume(10, timeout_s=1)
        assert batch, "producer stalled"
        received += [m.value for m in batch]
        consumer.ack(batch)
    producer.join(5)
    assert done.is_set()
    assert received == [str(i).encode() for i in range(6)]


def test_unacknowledged_messages_hold_capacity() -> None:
    bus = MemoryBus(capacity=2)
    consumer = bus.consumer("t", "g")
    bus.publish("t", [Record(b"a"), Record(b"b")])
    assert len(consumer.consume(10, 0.01)) == 2  # consumed, not acknowledged
    with pytest.raises(BusError):
        bus.publish("t", [Record(b"c")], timeout_s=0.05)


def test_closed_bus_refuses_work_and_wakes_waiters() -> None:
    bus = MemoryBus(capacity=1)
    consumer = bus.consumer("t", "g")
    waiter = threading.Thread(target=consumer.consume, args=(1, 30))
    waiter.start()
    bus.close()
    waiter.join(2)
    assert not waiter.is_alive()
    with pytest.raises(BusError):
        bus.publish("t", [Record(b"x")])


def test_lag_counts_unacknowledged() -> None:
    bus = MemoryBus()
    consumer = bus.consumer("t", "g")
    bus.publish("t", [Record(b"a"), Record(b"b"), Record(b"c")])
    batch = consumer.consume(2, 0.1)
    consumer.ack(batch)
    assert bus.lag("t", "g") == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBus(capacity=0)
