"""The engine against a real in-process bus and real stores: ordering of commit and ack."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from faultline.bus import BusError, Consumer, MemoryBus, Message, Record
from faultline.clock import ManualClock
from faultline.codec import ReadingDecoder, encode_reading
from faultline.config import Settings, load_settings
from faultline.detect import Detector, DetectorPipeline, Scores
from faultline.engine import Engine
from faultline.metrics import Metrics
from faultline.schema import WriteBatch
from faultline.store import (
    AnomalyCount,
    DeadLetterCount,
    LatestAnomalies,
    StationReadings,
    Store,
    open_store,
)
from faultline.store.base import LAST_MS
from faultline.store.forwarding import ForwardingStore

TOPIC = "readings"
T0 = 1_767_225_600_000


class Threshold(Detector):
    """A stateless test detector: temperature above 100 is anomalous."""

    name = "threshold"

    def score(self, frame: pd.DataFrame) -> Scores:
        t = frame["temperature"].to_numpy()
        flagged = np.nan_to_num(t) > 100
        return Scores(t.copy(), flagged, np.where(flagged, 1, 0).astype(np.int64))

    def learn(self, frame: pd.DataFrame) -> None:
        pass

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        return {}

    def restore(self, snapshot: dict[str, Any]) -> None:
        pass

    def forget(self, stations: Sequence[str]) -> None:
        pass


class FlakyStore(ForwardingStore):
    """Wraps a real store and fails the first `failures` writes (a unit-level fault injector)."""

    def __init__(self, inner: Store, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures
        self.attempts = 0

    def write(self, batch: WriteBatch) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("disk unavailable")
        self.inner.write(batch)


class FlakyConsumer(Consumer):
    """Wraps a real consumer; `consumes` of its consumes and `acks` of its acks raise
    BusError, taking nothing (as the SQLite bus does on a full disk)."""

    def __init__(self, inner: Consumer, consumes: int = 0, acks: int = 0, after: int = 0) -> None:
        self.inner = inner
        self.consumes = consumes
        self.acks = acks
        self.after = after  # consumes that go through before the failures begin

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        if self.after:
            self.after -= 1
        elif self.consumes:
            self.consumes -= 1
            raise BusError("consuming: nothing taken (OperationalError: disk I/O error)")
        return self.inner.consume(max_messages, timeout_s)

    def ack(self, messages: Sequence[Message]) -> None:
        if self.acks:
            self.acks -= 1
            raise BusError("acknowledging: did not move (OperationalError: disk is full)")
        self.inner.ack(messages)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'f.db'}"
    s = open_store(url)
    yield s
    s.close()


@pytest.fixture
def settings() -> Settings:
    return load_settings(engine={"batch_max_records": 50, "batch_max_wait_s": 0.05})


def new_bus() -> MemoryBus:
    """A bus whose receive times sit just after the test readings' event times."""
    return MemoryBus(clock=ManualClock(T0 + 600_000))


def make_engine(bus: MemoryBus, store: Store, settings: Settings, **kw: Any) -> Engine:
    return Engine(
        bus=bus,
        topic=TOPIC,
        store=store,
        decoder=ReadingDecoder(settings.sensors, settings.ingest),
        pipeline=DetectorPipeline([Threshold(settings.sensor_names)]),
        settings=settings.engine,
        metrics=kw.pop("metrics", Metrics()),
        **kw,
    )


def readings(n: int, station: str = "s1", hot_every: int = 0) -> list[Record]:
    out = []
    for i in range(n):
        temp = 150.0 if hot_every and i % hot_every == 0 else 25.0
        value = encode_reading(station, T0 + i * 1000, i, {"temperature": temp})
        out.append(Record(value, station.encode()))
    return out


def stored(store: Store, station: str = "s1") -> list[int]:
    page = store.query(StationReadings(station, 0, LAST_MS, limit=100_000))
    return [row.seq for row in page.rows]


def test_good_and_bad_messages_are_stored_then_acknowledged(
    store: Store, settings: Settings
) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(10, hot_every=5))
    bus.publish(TOPIC, [Record(b"not json"), Record(b'{"station_id": "s1"}')])
    engine = make_engine(bus, store, settings)

    result = engine.step()

    assert result is not None
    assert (result.messages, result.readings, result.dead_letters) == (12, 10, 2)
    assert result.anomalies == 2
    assert stored(store) == list(range(10))
    assert store.query(DeadLetterCount()) == 2
    assert [r.seq for r in store.query(LatestAnomalies(limit=10))] == [5, 0]
    assert bus.lag(TOPIC, settings.engine.consumer_group) == 0


def test_micro_batches_are_bounded_by_size(store: Store, settings: Settings) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(120))
    engine = make_engine(bus, store, settings)
    sizes = [engine.step().messages for _ in range(3)]  # type: ignore[union-attr]
    assert sizes == [50, 50, 20]
    assert engine.step() is None


def test_a_failing_store_is_retried_and_nothing_is_lost_or_acked_early(
    store: Store, settings: Settings
) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(20))
    flaky = FlakyStore(store, failures=3)
    metrics = Metrics()
    engine = make_engine(bus, flaky, settings, metrics=metrics, retry_backoff_s=0.01)

    result = engine.step()

    assert result is not None and result.readings == 20
    assert flaky.attempts == 4
    assert stored(store) == list(range(20))
    assert metrics.batch_failures._value.get() == 3
    assert bus.lag(TOPIC, settings.engine.consumer_group) == 0


def test_stopping_during_a_store_outage_leaves_messages_for_redelivery(
    store: Store, settings: Settings
) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(20))
    stop = threading.Event()
    stop.set()
    flaky = FlakyStore(store, failures=1)
    first = make_engine(bus, flaky, settings, retry_backoff_s=0.01)
    assert first.step(stop) is None  # gave up on stop, did not ack
    first.close()
    assert bus.lag(TOPIC, settings.engine.consumer_group) == 20
    assert stored(store) == []

    second = make_engine(bus, store, settings)
    assert second.step() is not None
    assert stored(store) == list(range(20))


def test_a_replayed_batch_adds_no_rows(store: Store, settings: Settings) -> None:
    """A crash between commit and ack: the next consumer replays, the store ignores it."""
    bus = new_bus()
    bus.publish(TOPIC, readings(10, hot_every=3))
    engine = make_engine(bus, store, settings)
    messages = engine.poll()
    store.write(engine.prepare(messages).batch)  # committed but never acknowledged
    engine.close()

    replay = make_engine(bus, store, settings)
    assert replay.step() is not None
    assert stored(store) == list(range(10))
    assert store.query(AnomalyCount(0, LAST_MS)) == 4


def test_run_drains_waiting_messages_on_stop(store: Store, settings: Settings) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(500))
    stop = threading.Event()
    stop.set()
    make_engine(bus, store, settings).run(stop, drain_s=30)
    assert stored(store) == list(range(500))
    assert bus.lag(TOPIC, settings.engine.consumer_group) == 0


def test_metrics_follow_the_batches(store: Store, settings: Settings) -> None:
    bus = new_bus()
    bus.publish(TOPIC, [*readings(10, hot_every=5), Record(b"{")])
    metrics = Metrics()
    make_engine(bus, store, settings, metrics=metrics).step()
    text = metrics.exposition().decode()
    assert "faultline_readings_total 10.0" in text
    assert 'faultline_dead_letters_total{kind="malformed"} 1.0' in text
    assert 'faultline_anomalies_total{sensor="temperature"} 2.0' in text
    assert "faultline_ingest_to_verdict_seconds_count 10.0" in text
    assert metrics.ingest_rate.rate() > 0


def test_a_failing_bus_is_retried_with_backoff_and_the_engine_carries_on(
    store: Store, settings: Settings
) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(20))
    engine = make_engine(bus, store, settings, retry_backoff_s=0.01)
    flaky = FlakyConsumer(bus.consumer(TOPIC, settings.engine.consumer_group), consumes=2, acks=2)
    engine._consumer = flaky

    assert engine.step() is None  # consume failed: nothing taken, backed off
    assert engine.last_error is not None and "bus consume failed" in engine.last_error
    assert engine.step() is None
    result = engine.step()  # consumes, stores, and retries the ack until it goes through

    assert result is not None and result.readings == 20
    assert (flaky.consumes, flaky.acks) == (0, 0)
    assert engine.last_error is None
    assert stored(store) == list(range(20))
    assert bus.lag(TOPIC, settings.engine.consumer_group) == 0


def test_a_consume_failing_until_the_bus_is_idle_clears_from_health(
    store: Store, settings: Settings
) -> None:
    bus = new_bus()
    engine = make_engine(bus, store, settings, retry_backoff_s=0.01)
    engine._consumer = FlakyConsumer(bus.consumer(TOPIC, settings.engine.consumer_group), 1)
    assert engine.step() is None and engine.last_error is not None
    assert engine.step() is None and engine.last_error is None  # answers again, nothing waits


def test_a_consume_failing_mid_batch_stores_what_was_already_taken(
    store: Store, settings: Settings
) -> None:
    bus = new_bus()
    bus.publish(TOPIC, readings(10))
    inner = bus.consumer(TOPIC, settings.engine.consumer_group)
    engine = make_engine(bus, store, settings)
    engine._consumer = FlakyConsumer(inner, consumes=1, after=1)
    engine._consumer.consume = _one_at_a_time(engine._consumer.consume)  # type: ignore[method-assign]

    result = engine.step()  # one message taken, then the bus failed: that one is kept

    assert result is not None and result.messages == 1
    assert stored(store) == [0]
    while engine.step() is not None:
        pass
    assert stored(store) == list(range(10))


def _one_at_a_time(consume: Any) -> Any:
    return lambda max_messages, timeout_s: consume(1, timeout_s)
