"""Memory-bus behaviour beyond the shared bus contract: bounded capacity and backpressure."""

from __future__ import annotations

import threading

import pytest

from faultline.bus import BusError, MemoryBus, Record, open_bus


def test_publish_blocks_while_full_then_fails_after_the_timeout() -> None:
    bus = MemoryBus(max_messages=3)
    bus.publish("t", [Record(b"1"), Record(b"2"), Record(b"3")])
    with pytest.raises(BusError, match="full"):
        bus.publish("t", [Record(b"4")], timeout_s=0.05)


def test_backpressure_releases_when_the_consumer_acknowledges() -> None:
    bus = MemoryBus(max_messages=2)
    consumer = bus.consumer("t", "g")
    done = threading.Event()

    def produce() -> None:
        for i in range(6):
            bus.publish("t", [Record(str(i).encode())], timeout_s=5)
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
    bus = MemoryBus(max_messages=2)
    consumer = bus.consumer("t", "g")
    bus.publish("t", [Record(b"a"), Record(b"b")])
    assert len(consumer.consume(10, 0.01)) == 2  # consumed, not acknowledged
    with pytest.raises(BusError):
        bus.publish("t", [Record(b"c")], timeout_s=0.05)


def test_closed_bus_refuses_work_and_wakes_waiters() -> None:
    bus = MemoryBus(max_messages=1)
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


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBus(max_messages=0)
    with pytest.raises(ValueError):
        MemoryBus(max_bytes=0)


def test_bounds_come_from_the_url() -> None:
    bus = open_bus("memory://?max_messages=7&max_bytes=900")
    assert isinstance(bus, MemoryBus)
    assert (bus.max_messages, bus.max_bytes) == (7, 900)
    with pytest.raises(ValueError, match="unknown option 'capacity'"):
        open_bus("memory://?capacity=3")
    with pytest.raises(ValueError, match="bad value for 'max_bytes'"):
        open_bus("memory://?max_bytes=lots")


def test_megabyte_payloads_are_bounded_by_bytes_not_count() -> None:
    # The finding: 400 x 1 MB were accepted while the engine stalled (+342 MB).
    bus = MemoryBus(max_bytes=16 * 1024 * 1024)
    payload = Record(b"{" + b" " * (1024 * 1024 - 2) + b"}")
    taken = 0
    with pytest.raises(BusError, match="full"):
        for _ in range(400):
            bus.publish("t", [payload], timeout_s=0.01)
            taken += 1
    assert taken == 16


def test_a_new_bus_is_a_new_log() -> None:
    assert MemoryBus().log_id("t") != MemoryBus().log_id("t")
