"""The runner: publishes into a real MemoryBus, paced by an injected clock, and stops on request."""

from __future__ import annotations

import threading
import time

import pytest

from faultline.bus import BusClosed, MemoryBus, Message, Record
from faultline.clock import ManualClock, SystemClock
from faultline.codec import RawMessage, ReadingDecoder
from faultline.config import DEFAULT_SENSORS, IngestSettings
from faultline.metrics import Metrics
from faultline.schema import FaultLabel
from faultline.simulate import Simulator, run_simulator, simulate_frame

TOPIC = "readings"


def drain(bus: MemoryBus) -> list[Message]:
    return bus.consumer(TOPIC, "test").consume(10**7, timeout_s=0)


def published_count(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("faultline_simulated_total")
    assert value is not None
    return value


def test_paced_run_publishes_every_tick_at_its_time() -> None:
    clock = ManualClock()
    start = clock.now_ms()
    bus = MemoryBus(clock=clock)
    metrics = Metrics(clock=clock)
    sim = Simulator(DEFAULT_SENSORS, stations=5, seed=1)
    count = run_simulator(
        sim,
        bus,
        TOPIC,
        clock=clock,
        rate_hz=2.0,
        stop=threading.Event(),
        max_ticks=30,
        metrics=metrics,
    )
    messages = drain(bus)
    assert count == len(messages) == 150
    assert published_count(metrics) == 150
    decoded = ReadingDecoder(dict(DEFAULT_SENSORS), IngestSettings()).decode(
        [RawMessage(m.value, m.source, m.timestamp_ms, m.offset) for m in messages]
    )
    assert decoded.dead_letters == []
    ts = decoded.readings["ts"].to_numpy()
    assert sorted(set(ts.tolist())) == [start + 500 * k for k in range(30)]
    # Each tick goes out when the clock reaches its time, not before.
    assert all(m.timestamp_ms >= t for m, t in zip(messages, ts.tolist(), strict=True))
    assert clock.now_ms() - start == pytest.approx(29 * 500, abs=60)
    assert [m.key for m in messages[:5]] == [f"station_00{i}".encode() for i in range(1, 6)]


def test_runner_publishes_what_the_frame_api_generates_and_every_label() -> None:
    clock = ManualClock()
    kwargs = {"stations": 8, "seed": 4, "faults_per_station_hour": 30.0}
    frame, expected = simulate_frame(DEFAULT_SENSORS, 1200, start_ms=clock.now_ms(), **kwargs)
    labels: list[FaultLabel] = []
    bus = MemoryBus(clock=clock)
    count = run_simulator(
        Simulator(DEFAULT_SENSORS, **kwargs),
        bus,
        TOPIC,
        clock=clock,
        rate_hz=1.0,
        stop=threading.Event(),
        on_labels=labels.extend,
        max_ticks=1200,
    )
    dropped = sum(
        (label.end_ts - label.start_ts) // 1000 + 1 for label in expected if label.kind == "dropout"
    )
    assert dropped > 0
    assert count == len(drain(bus)) == len(frame) == 1200 * 8 - dropped
    assert labels == expected


def test_flat_out_run_publishes_in_blocks_stamped_with_the_clock() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock=clock)
    metrics = Metrics(clock=clock)
    sim = Simulator(DEFAULT_SENSORS, stations=100, seed=2)
    count = run_simulator(
        sim,
        bus,
        TOPIC,
        clock=clock,
        rate_hz=0,
        stop=threading.Event(),
        max_ticks=250,
        metrics=metrics,
    )
    assert count == len(drain(bus)) == 25_000 == published_count(metrics)
    assert sim.ticks == 250


def test_stop_event_ends_a_run_with_no_tick_limit() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock=clock)
    stop = threading.Event()
    consumer = bus.consumer(TOPIC, "test")
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run_simulator(
                Simulator(DEFAULT_SENSORS, stations=3, seed=0),
                bus,
                TOPIC,
                clock=clock,
                rate_hz=1.0,
                stop=stop,
            )
        )
    )
    worker.start()
    seen: list[Message] = []
    deadline = time.monotonic() + 10
    while len(seen) < 30 and time.monotonic() < deadline:
        seen += consumer.consume(30, timeout_s=1)
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()
    seen += consumer.consume(10**6, timeout_s=0)
    assert len(seen) >= 30
    assert result == [len(seen)]


def test_stop_is_prompt_with_the_wall_clock() -> None:
    clock = SystemClock()
    bus = MemoryBus()
    stop = threading.Event()
    consumer = bus.consumer(TOPIC, "test")
    worker = threading.Thread(
        target=run_simulator,
        args=(Simulator(DEFAULT_SENSORS, stations=2, seed=0), bus, TOPIC),
        kwargs={"clock": clock, "rate_hz": 0.2, "stop": stop},  # next tick due in 5 s
    )
    worker.start()
    assert len(consumer.consume(10, timeout_s=5)) == 2
    begun = time.monotonic()
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert time.monotonic() - begun < 1.0  # the next tick was 5 s away


def test_a_set_stop_event_publishes_nothing() -> None:
    stop = threading.Event()
    stop.set()
    bus = MemoryBus()
    count = run_simulator(
        Simulator(DEFAULT_SENSORS, stations=2, seed=0),
        bus,
        TOPIC,
        clock=ManualClock(),
        rate_hz=1.0,
        stop=stop,
    )
    assert count == 0 and drain(bus) == []


def test_labels_of_faults_in_progress_are_delivered_when_the_run_ends() -> None:
    clock = ManualClock()
    labels: list[FaultLabel] = []
    sim = Simulator(
        DEFAULT_SENSORS,
        stations=4,
        seed=3,
        faults_per_station_hour=3600.0,
        fault_weights={"level_shift": 1.0},  # at least 30 ticks each, so all are cut short
    )
    run_simulator(
        sim,
        MemoryBus(clock=clock),
        TOPIC,
        clock=clock,
        rate_hz=1.0,
        stop=threading.Event(),
        on_labels=labels.extend,
        max_ticks=10,
    )
    last_ts = clock.now_ms()
    assert len(labels) == 4
    assert {label.station_id for label in labels} == set(sim.station_ids)
    assert all(label.end_ts == last_ts for label in labels)


def test_a_bus_that_stays_full_is_waited_out_not_a_crash() -> None:
    # The finding: the simulator thread died for good when the bus stayed full 10 s.
    bus = MemoryBus(max_messages=10)
    metrics = Metrics()
    consumer = bus.consumer(TOPIC, "engine")
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run_simulator(
                Simulator(DEFAULT_SENSORS, stations=5, seed=0),
                bus,
                TOPIC,
                clock=SystemClock(),
                rate_hz=0,
                stop=threading.Event(),
                max_ticks=20,
                metrics=metrics,
                publish_timeout_s=0.02,
            )
        )
    )
    worker.start()
    time.sleep(0.5)  # the engine stalls: the bus is full for many publish timeouts
    assert worker.is_alive()
    failures = metrics.registry.get_sample_value("faultline_simulator_bus_failures_total")
    assert failures is not None and failures >= 3
    seen: list[Message] = []
    deadline = time.monotonic() + 30
    while len(seen) < 100 and time.monotonic() < deadline:
        batch = consumer.consume(100, timeout_s=0.1)
        consumer.ack(batch)
        seen += batch
    worker.join(5)
    assert result == [100]
    assert len(seen) == len({m.value for m in seen}) == 100  # each reading once


def test_a_block_larger_than_the_bus_holds_is_split() -> None:
    clock = ManualClock()
    bus = MemoryBus(max_messages=4, clock=clock)  # a tick of 9 stations never fits whole
    consumer = bus.consumer(TOPIC, "engine")
    stop = threading.Event()
    taken: list[Message] = []

    class Draining(SystemClock):
        def sleep(self, seconds: float) -> None:  # the engine acks while the runner waits
            batch = consumer.consume(100, timeout_s=0)
            consumer.ack(batch)
            taken.extend(batch)
            clock.sleep(seconds)

    count = run_simulator(
        Simulator(DEFAULT_SENSORS, stations=9, seed=0),
        bus,
        TOPIC,
        clock=Draining(),
        rate_hz=0,
        stop=stop,
        max_ticks=3,
        publish_timeout_s=0.01,
    )
    taken += consumer.consume(100, timeout_s=0)
    assert count == 27 and len({m.value for m in taken}) == 27


def test_stop_ends_the_retries() -> None:
    bus = MemoryBus(max_messages=1)
    bus.publish(TOPIC, [Record(b"nobody consumes this")])
    stop = threading.Event()
    worker = threading.Thread(
        target=run_simulator,
        args=(Simulator(DEFAULT_SENSORS, stations=1, seed=0), bus, TOPIC),
        kwargs={"clock": SystemClock(), "rate_hz": 0, "stop": stop, "publish_timeout_s": 0.01},
    )
    worker.start()
    time.sleep(0.3)
    stop.set()
    worker.join(2)
    assert not worker.is_alive()


def test_a_closed_bus_is_raised_and_labels_are_still_delivered() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock=clock)
    bus.close()
    labels: list[FaultLabel] = []
    sim = Simulator(
        DEFAULT_SENSORS,
        stations=10,
        seed=3,
        faults_per_station_hour=3600.0,
        fault_weights={"stuck": 1.0},
    )
    with pytest.raises(BusClosed, match="closed"):
        run_simulator(
            sim,
            bus,
            TOPIC,
            clock=clock,
            rate_hz=0,
            stop=threading.Event(),
            on_labels=labels.extend,
            max_ticks=5,
        )
    assert len(labels) >= 5
    assert all(label.end_ts == clock.now_ms() for label in labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_hz": -1.0}, "rate_hz must be a number >= 0"),
        ({"rate_hz": float("inf")}, "rate_hz must be a number >= 0"),
        ({"rate_hz": 1.0, "max_ticks": -1}, "max_ticks must be >= 0"),
    ],
)
def test_bad_runner_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_simulator(
            Simulator(DEFAULT_SENSORS, stations=1),
            MemoryBus(),
            TOPIC,
            clock=ManualClock(),
            stop=threading.Event(),
            **kwargs,
        )
