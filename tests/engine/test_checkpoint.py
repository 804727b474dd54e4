"""Checkpointed detector state: a crashed engine resumes from its checkpoint, neither warming up
again nor learning a reading twice; checkpoints of a recreated log are not taken for its own;
the stations held are bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from faultline.bus import MemoryBus, Record
from faultline.clock import ManualClock
from faultline.codec import ReadingDecoder, encode_reading
from faultline.config import Settings, load_settings
from faultline.detect import Detector, DetectorPipeline, Scores
from faultline.detect.surprise import SurpriseDetector
from faultline.engine import Engine
from faultline.metrics import Metrics
from faultline.schema import WriteBatch
from faultline.store import (
    Checkpoints,
    DeadLetters,
    StationReadings,
    Store,
    open_store,
)
from faultline.store.base import LAST_MS
from faultline.store.forwarding import ForwardingStore

TOPIC = "readings"
T0 = 1_767_225_600_000
SENSORS = ("temperature", "humidity", "noise_level")


class Recording(Detector):
    """`surprise` (warm after 20 readings), recording every reading it learns."""

    name = "surprise"

    def __init__(self) -> None:
        super().__init__(SENSORS)
        self.inner = SurpriseDetector(SENSORS, warmup=20)
        self.learned: list[tuple[str, int]] = []

    def score(self, frame: pd.DataFrame) -> Scores:
        return self.inner.score(frame)

    def learn(self, frame: pd.DataFrame) -> None:
        self.process(frame)

    def process(self, frame: pd.DataFrame) -> Scores:
        self.learned += list(zip(frame["station_id"], frame["seq"], strict=True))
        return self.inner.process(frame)

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        return self.inner.snapshot(stations)

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.inner.restore(snapshot)

    def dump(self, stations: Sequence[str] | None = None) -> bytes:
        return self.inner.dump(stations)

    def load(self, data: bytes) -> None:
        self.inner.load(data)

    def forget(self, stations: Sequence[str]) -> None:
        self.inner.forget(stations)


class Crash(BaseException):
    """The process dies: not an error the engine could retry."""


class CrashingStore(ForwardingStore):
    """A real store whose process dies right after its `after`-th write committed, before the
    engine could acknowledge anything of it (a unit-level fault injector)."""

    def __init__(self, inner: Store, after: int) -> None:
        super().__init__(inner)
        self.after = after
        self.writes = 0

    def write(self, batch: WriteBatch) -> None:
        self.inner.write(batch)
        self.writes += 1
        if self.writes == self.after:
            raise Crash


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'f.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def new_bus(clock: ManualClock | None = None) -> MemoryBus:
    """A bus whose receive times sit just after the test readings' event times."""
    return MemoryBus(clock=clock or ManualClock(T0 + 200_000))


def settings(**engine: Any) -> Settings:
    # Checkpoints by count only, so a test knows where they fall.
    base = {"batch_max_records": 40, "batch_max_wait_s": 0.01, "checkpoint_interval_s": 3600}
    return load_settings(engine={**base, "checkpoint_max_messages": 100, **engine})


def make_engine(
    bus: MemoryBus,
    store: Store,
    s: Settings,
    pipeline: DetectorPipeline,
    metrics: Metrics | None = None,
    topic: str = TOPIC,
) -> Engine:
    return Engine(
        bus=bus,
        topic=topic,
        store=store,
        decoder=ReadingDecoder(s.sensors, s.ingest),
        pipeline=pipeline,
        settings=s.engine,
        metrics=metrics or Metrics(),
        clock=ManualClock(T0 + 10**7),
    )


def records(
    stations: int, rounds: int, seed: int, prefix: str = "s", start: int = T0
) -> list[Record]:
    """Interleaved noisy readings with a few spikes, one second apart per station."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rounds):
        for k in range(stations):
            station = f"{prefix}{k}"
            values = {"temperature": 25 + rng.normal(0, 2), "humidity": 60 + rng.normal(0, 3)}
            if i % 37 == 36:
                values["temperature"] += 40
            out.append(
                Record(encode_reading(station, start + i * 1000, i, values), station.encode())
            )
    return out


def verdicts(store: Store, stations: Sequence[str]) -> list[tuple[str, int, float | None, bool]]:
    out = []
    for station in stations:
        for row in store.query(StationReadings(station, 0, LAST_MS, limit=100_000)).rows:
            out.append((station, row.seq, row.scores["surprise"], row.is_anomaly))
    return out


def drain(engine: Engine, bus: MemoryBus, s: Settings) -> None:
    """Step until the bus has nothing more, then checkpoint (as a clean stop does)."""
    while engine.step() is not None:
        pass
    engine.checkpoint(threading.Event())
    assert bus.lag(TOPIC, s.engine.consumer_group) == 0


def uninterrupted(
    data: list[Record],
    s: Settings,
    stations: Sequence[str] = ("s0", "s1", "s2"),
    received_at: int = T0 + 200_000,
) -> list[tuple[str, int, float | None, bool]]:
    bus, store = new_bus(ManualClock(received_at)), open_store("memory://")
    bus.publish(TOPIC, data)
    drain(make_engine(bus, store, s, DetectorPipeline([Recording()])), bus, s)
    return verdicts(store, stations)


@pytest.mark.parametrize("crash_after", [2, 4, 7])
def test_a_crashed_engine_resumes_from_its_checkpoint_as_if_never_stopped(
    store: Store, crash_after: int
) -> None:
    s = settings()
    data = records(stations=3, rounds=100, seed=1)
    bus = new_bus()
    bus.publish(TOPIC, data)
    first = Recording()
    crashing = make_engine(bus, CrashingStore(store, crash_after), s, DetectorPipeline([first]))
    with pytest.raises(Crash):
        drain(crashing, bus, s)
    # Killed: its consumer is never closed, so nothing more is acknowledged.
    (checkpoint,) = store.query(Checkpoints(s.engine.consumer_group, TOPIC))
    stored_so_far = len(verdicts(store, ["s0", "s1", "s2"]))
    unacked = bus.lag(TOPIC, s.engine.consumer_group)
    assert unacked > 0 and stored_so_far > len(data) - unacked  # stored but not acknowledged

    second = Recording()
    drain(make_engine(bus, store, s, DetectorPipeline([second])), bus, s)

    assert verdicts(store, ["s0", "s1", "s2"]) == uninterrupted(data, s)
    # The restarted engine learned exactly what the checkpoint did not cover, each once: its
    # state is the first engine's up to the checkpoint, nothing re-warmed, nothing twice.
    keys = [(f"s{k}", i) for i in range(100) for k in range(3)]
    assert first.learned[: checkpoint.offset] == keys[: checkpoint.offset]
    assert second.learned == keys[checkpoint.offset :]


def test_a_clean_stop_checkpoints_everything_and_a_restart_learns_only_what_is_new(
    store: Store,
) -> None:
    s = settings()
    bus = new_bus()
    bus.publish(TOPIC, records(stations=3, rounds=30, seed=2))
    stop = threading.Event()
    stop.set()
    make_engine(bus, store, s, DetectorPipeline([Recording()])).run(stop, drain_s=30)
    (checkpoint,) = store.query(Checkpoints(s.engine.consumer_group, TOPIC))
    assert checkpoint.offset == 90 and bus.lag(TOPIC, s.engine.consumer_group) == 0

    more = records(stations=3, rounds=31, seed=2)[90:]
    bus.publish(TOPIC, more)
    resumed = Recording()
    drain(make_engine(bus, store, s, DetectorPipeline([resumed])), bus, s)
    assert resumed.learned == [(f"s{k}", 30) for k in range(3)]
    # Warm from the checkpoint: the 31st readings get verdicts at once.
    assert all(score is not None for _, seq, score, _ in verdicts(store, ["s0"]) if seq == 30)


def test_a_checkpoint_of_a_recreated_log_is_not_taken_for_its_own(store: Store) -> None:
    s = settings()
    old = new_bus()
    old.publish(TOPIC, records(stations=3, rounds=60, seed=3))
    drain(make_engine(old, store, s, DetectorPipeline([Recording()])), old, s)
    (before,) = store.query(Checkpoints(s.engine.consumer_group, TOPIC))
    assert before.offset == 180

    # A new log under the same topic: its offsets start at 0 again, below the checkpoint's.
    new = new_bus()
    assert new.log_id(TOPIC) != old.log_id(TOPIC)
    new.publish(TOPIC, records(stations=3, rounds=40, seed=4, prefix="s"))
    fresh = Recording()
    drain(make_engine(new, store, s, DetectorPipeline([fresh])), new, s)
    assert len(fresh.learned) == 120  # nothing skipped as "already learned"
    first_scores = [score for _, seq, score, _ in verdicts(store, ["s0"]) if seq < 20]
    assert len(first_scores) == 20  # seed 3's and 4's readings share keys: stored once
    # The new log's checkpoint replaced the old one (its offset continues above it) ...
    (after,) = store.query(Checkpoints(s.engine.consumer_group, TOPIC))
    assert after.offset == before.offset + 120

    # ... so an engine restarted on the new log resumes from it.
    new.publish(TOPIC, records(stations=3, rounds=41, seed=4)[120:])
    resumed = Recording()
    drain(make_engine(new, store, s, DetectorPipeline([resumed])), new, s)
    assert resumed.learned == [(f"s{k}", 40) for k in range(3)]


def test_new_stations_beyond_the_cap_are_dead_letters_until_silent_ones_are_evicted(
    store: Store,
) -> None:
    s = settings(max_stations=3, evict_silent_after_s=3600)
    clock = ManualClock(T0 + 200_000)
    bus = new_bus(clock)
    metrics = Metrics()
    engine = make_engine(bus, store, s, DetectorPipeline([Recording()]), metrics)
    bus.publish(TOPIC, records(stations=5, rounds=2, seed=5))
    drain(engine, bus, s)
    assert {st for st, *_ in verdicts(store, [f"s{k}" for k in range(5)])} == {"s0", "s1", "s2"}
    letters = store.query(DeadLetters(limit=100))
    assert len(letters) == 4 and {d.kind for d in letters} == {"station_limit"}
    assert all("engine.max_stations" in d.reason for d in letters)
    assert {d.reason.split("'")[1] for d in letters} == {"s3", "s4"}

    # An hour and more later only s0 still talks: s1 and s2 are evicted, s3 admitted.
    clock.advance(3601)
    later = [r for r in records(stations=5, rounds=3, seed=6)[10:] if r.key in (b"s0", b"s3")]
    bus.publish(TOPIC, later[:1])
    drain(engine, bus, s)
    assert metrics.stations_evicted._value.get() == 2
    bus.publish(TOPIC, later[1:])
    drain(engine, bus, s)
    assert [seq for st, seq, *_ in verdicts(store, ["s3"])] == [2]


class Outage(ForwardingStore):
    """A real store that becomes unreachable after `ok` writes (a unit-level fault injector)."""

    def __init__(self, inner: Store, ok: int) -> None:
        super().__init__(inner)
        self.ok = ok

    def write(self, batch: WriteBatch) -> None:
        if self.ok == 0:
            raise OSError("store unreachable")
        self.ok -= 1
        self.inner.write(batch)


def test_a_batch_given_up_on_stop_is_never_covered_by_a_later_checkpoint(store: Store) -> None:
    s = settings(checkpoint_max_messages=80)
    bus = new_bus()
    bus.publish(TOPIC, records(stations=2, rounds=60, seed=8))
    outage = Outage(store, ok=2)
    engine = make_engine(bus, outage, s, DetectorPipeline([Recording()]))
    assert engine.step() is not None  # 40 messages, checkpointed (the first batch) and acked
    assert engine.step() is not None  # 40 more, stored but not yet checkpointed
    stop = threading.Event()
    stop.set()
    assert engine.step(stop) is None  # due to checkpoint, but the store is gone: given up
    outage.ok = 10  # the store is back, yet this engine has learned what was never stored
    engine.run(stop, drain_s=1)  # drains and checkpoints nothing
    (checkpoint,) = store.query(Checkpoints(s.engine.consumer_group, TOPIC))
    assert checkpoint.offset == 40
    assert bus.lag(TOPIC, s.engine.consumer_group) == 80

    resumed = Recording()
    drain(make_engine(bus, store, s, DetectorPipeline([resumed])), bus, s)
    assert resumed.learned == [(f"s{k}", i) for i in range(20, 60) for k in range(2)]
