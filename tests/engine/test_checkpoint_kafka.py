"""Checkpoints on a real Kafka topic of three partitions: a crashed engine's successor resumes
each partition from its checkpoint with the uninterrupted run's verdicts."""

from __future__ import annotations

import time
import uuid

import pytest

from faultline.bus import open_bus
from faultline.clock import SystemClock
from faultline.detect import DetectorPipeline
from faultline.engine import Engine
from faultline.store import Checkpoints, Store, open_store
from tests.engine.test_checkpoint import (
    Crash,
    CrashingStore,
    Recording,
    make_engine,
    records,
    settings,
    uninterrupted,
    verdicts,
)
from tests.services.endpoints import require_endpoint

STATIONS = ["s0", "s1", "s2", "s3", "s4", "s5"]


def until_stored(engine: Engine, store: Store, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(verdicts(store, STATIONS)) < count:
        assert time.monotonic() < deadline, f"{len(verdicts(store, STATIONS))} of {count} stored"
        engine.step()


def test_each_partition_resumes_from_its_checkpoint_after_a_crash() -> None:
    topic = f"checkpoint-{uuid.uuid4().hex[:10]}"
    bus = open_bus(f"kafka://{require_endpoint('FAULTLINE_TEST_KAFKA')}?partitions=3")
    store = open_store("memory://")
    s = settings(batch_max_records=60)
    # Event times an hour before now: Kafka stamps the messages with its own clock.
    now = SystemClock().now_ms()
    data = records(stations=6, rounds=60, seed=7, start=now - 3_600_000)
    try:
        bus.publish(topic, data)
        crashing = CrashingStore(store, 4)
        first = make_engine(bus, crashing, s, DetectorPipeline([Recording()]), topic=topic)
        with pytest.raises(Crash):
            until_stored(first, store, len(data))
        first.close()  # the consumer leaves the group without acknowledging anything more
        checkpoints = store.query(Checkpoints(s.engine.consumer_group, topic))
        assert {c.partition for c in checkpoints} <= {0, 1, 2} and checkpoints

        learned = Recording()
        second = make_engine(bus, store, s, DetectorPipeline([learned]), topic=topic)
        until_stored(second, store, len(data))
        second.close()
    finally:
        bus.close()

    assert verdicts(store, STATIONS) == uninterrupted(data, s, STATIONS, received_at=now)
    assert len(learned.learned) == len(set(learned.learned)) < len(data)
