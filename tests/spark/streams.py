"""What the Spark tests publish and how they read results back: a seeded simulator and injected bad
messages on a Kafka topic, the in-process engine as the reference, and the stores' verdicts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer

from faultline.alarm_schema import AlarmTransition
from faultline.bus.kafka import KafkaBus
from faultline.clock import SystemClock
from faultline.codec import ReadingDecoder
from faultline.config import Settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine import Engine
from faultline.metrics import Metrics
from faultline.runtime import model_registry
from faultline.simulate import Simulator
from faultline.store import (
    AlarmTransitions,
    DeadLetterCount,
    DeadLetters,
    StationReadings,
    Stations,
    Store,
)
from faultline.store.base import FIRST_MS, LAST_MS
from tests.fuzz import corpus, rejected

Key = tuple[str, int, int]


def publish_simulated(
    settings: Settings, *, stations: int, ticks: int, seed: int, first_tick: int = 0
) -> list[Key]:
    """`ticks` seconds of a seeded simulator with frequent faults, ending now; their keys."""
    sim = Simulator(settings.sensors, stations=stations, seed=seed, faults_per_station_hour=300)
    start = SystemClock().now_ms() - (first_tick + ticks) * 1000
    bus = KafkaBus.from_url(settings.bus_url)
    keys: list[Key] = []
    try:
        for first in range(0, ticks, 100):
            times = start + 1000 * np.arange(first, min(first + 100, ticks), dtype=np.int64)
            block = sim.block(times)
            bus.publish(settings.readings_topic, block.records())
            ids = np.asarray(block.station_ids, dtype=object)[block.station]
            keys += zip(ids.tolist(), block.ts.tolist(), block.seq.tolist(), strict=True)
    finally:
        bus.close()
    return keys


def publish_bad_and_odd(settings: Settings, bootstrap: str) -> int:
    """One message of each kind of bad input, the payloads that once stopped the engine, a fixed
    fuzz corpus (tests/fuzz.py; those of it the decoder rejects), a tombstone, and one good
    reading in seed 000's flat form (no ts, no seq: ingest time and the offset stand in);
    returns how many are bad."""
    now = SystemClock().now_ms()
    future = now + 86_400_000
    bad: list[bytes | None] = [
        b"{not json",
        b'{"ts": 1, "values": {"temperature": 20.0}}',
        b'{"station_id": "station_001", "values": {"temperature": 999.0}}',
        b'{"station_id": "station_001", "values": {"pressure": 1.0}}',
        json.dumps({"station_id": "s", "ts": future, "values": {"humidity": 50}}).encode(),
        None,
    ]
    bad += rejected(corpus(60), now)
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in bad:
        producer.produce(settings.readings_topic, value=value)
    flat = {"station_id": "station_002", "temperature": 25.0, "humidity": 60.0, "noise_level": 50.0}
    producer.produce(settings.readings_topic, value=json.dumps(flat).encode(), key=b"station_002")
    assert producer.flush(30) == 0
    return len(bad)


def run_in_process(
    settings: Settings, store: Store, messages: int, metrics: Metrics | None = None
) -> None:
    """The in-process engine over the same topic (its own consumer group) until it has taken
    `messages` messages, counting into `metrics`."""
    bus = KafkaBus.from_url(settings.bus_url)
    model = model_registry(settings).current()
    engine = Engine(
        bus=bus,
        topic=settings.readings_topic,
        store=store,
        decoder=ReadingDecoder(settings.sensors, settings.ingest),
        pipeline=DetectorPipeline(build_detectors(settings, model)),
        settings=settings.engine,
        metrics=metrics or Metrics(),
        alarms=settings.alarms,
    )
    taken = 0
    deadline = time.monotonic() + 120
    try:
        while taken < messages:
            assert time.monotonic() < deadline, f"in-process engine took {taken} of {messages}"
            step = engine.step()
            taken += step.messages if step else 0
    finally:
        engine.close()
        bus.close()


def alarm_transitions(store: Store, kind: str) -> list[AlarmTransition]:
    """Every stored transition of alarms of `kind`, in the log's (ts, alarm, key) order."""
    every = store.query(AlarmTransitions(FIRST_MS, LAST_MS))
    return [t for t in every if t.alarm.kind == kind]


def verdicts(store: Store) -> dict[Key, tuple[Any, ...]]:
    """Every stored reading with its verdict, by key."""
    rows: dict[Key, tuple[Any, ...]] = {}
    for station in store.query(Stations()):
        after = None
        while True:
            page = store.query(
                StationReadings(station.station_id, 0, LAST_MS, limit=5000, after=after)
            )
            for r in page.rows:
                rows[(r.station_id, r.ts, r.seq)] = (
                    r.is_anomaly,
                    r.scores,
                    r.sensors,
                    r.model_version,
                    r.values,
                    r.received_at,
                    r.ts_assigned,
                )
            if page.next_cursor is None:
                break
            after = page.next_cursor
    return rows


def dead_letters(store: Store) -> set[tuple[Any, ...]]:
    return {
        (d.source, d.reason, d.kind, d.payload, d.received_at)
        for d in store.query(DeadLetters(limit=1000))
    }


def stored_counts(store: Store) -> tuple[int, int]:
    """(readings, dead letters) in the store, from its per-station counters."""
    readings = sum(s.readings for s in store.query(Stations()))
    return readings, store.query(DeadLetterCount())


def wait_until(
    done: Callable[[], bool],
    timeout_s: float,
    what: str,
    status: Callable[[], object] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            seen = f" (got {status()})" if status is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{seen}")
        time.sleep(0.2)


@contextmanager
def spark_engine_thread(
    settings: Settings, checkpoint: Path, **options: Any
) -> Iterator[Callable[[], bool]]:
    """`run_spark_engine` in a thread; yields a probe saying whether it is still running.
    Leaving the block stops it (after its batch) and re-raises what it raised."""
    from faultline.engine.spark import run_spark_engine

    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_spark_engine(settings, stop=stop, checkpoint_dir=checkpoint, **options)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="spark-engine", daemon=True)
    thread.start()

    def running() -> bool:
        if errors:
            raise errors[0]
        return thread.is_alive()

    try:
        yield running
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive(), "the Spark engine did not stop within 120 s"
    if errors:
        raise errors[0]
