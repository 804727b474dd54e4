"""No input stops the engine: poison readings are isolated by splitting and dead-lettered."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from faultline.bus import MemoryBus, Record
from faultline.codec import ReadingDecoder, encode_reading
from faultline.config import load_settings
from faultline.detect import Detector, DetectorPipeline, Scores
from faultline.engine import Engine
from faultline.metrics import Metrics
from faultline.schema import WriteBatch
from faultline.store import (
    DeadLetters,
    InvalidBatch,
    StationReadings,
    Store,
    open_store,
)
from faultline.store.base import LAST_MS
from faultline.store.forwarding import ForwardingStore

from .test_engine import T0, TOPIC, new_bus

POISON = 66.6  # the temperature our test detectors cannot handle


class Choking(Detector):
    """Raises on any batch holding the poison temperature; counts what it learned."""

    name = "choking"

    def __init__(self, sensors: Sequence[str]) -> None:
        super().__init__(sensors)
        self.learned: list[tuple[str, int]] = []
        self.calls = 0

    def score(self, frame: pd.DataFrame) -> Scores:
        self.calls += 1
        if (frame["temperature"].to_numpy() == POISON).any():
            raise ZeroDivisionError("a reading this detector was never written for")
        return Scores(
            np.zeros(len(frame)), np.zeros(len(frame), bool), np.zeros(len(frame), np.int64)
        )

    def learn(self, frame: pd.DataFrame) -> None:
        self.learned += list(zip(frame["station_id"], frame["seq"], strict=True))

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        return {}

    def restore(self, snapshot: dict[str, Any]) -> None:
        pass

    def forget(self, stations: Sequence[str]) -> None:
        pass


class Refusing(ForwardingStore):
    """A real store that refuses, as invalid, any batch holding a reading of station "bad"."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)

    def write(self, batch: WriteBatch) -> None:
        if (batch.readings["station_id"] == "bad").any():
            raise InvalidBatch("station 'bad' cannot be stored")
        self.inner.write(batch)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'f.db'}")


def engine_over(bus: MemoryBus, store: Store, detector: Detector, metrics: Metrics) -> Engine:
    settings = load_settings(engine={"batch_max_records": 500, "batch_max_wait_s": 0.05})
    return Engine(
        bus=bus,
        topic=TOPIC,
        store=store,
        decoder=ReadingDecoder(settings.sensors, settings.ingest),
        pipeline=DetectorPipeline([detector]),
        settings=settings.engine,
        metrics=metrics,
        retry_backoff_s=0.01,
    )


def reading(station: str, seq: int, temperature: float = 25.0) -> Record:
    payload = encode_reading(station, T0 + seq * 1000, seq, {"temperature": temperature})
    return Record(payload, station.encode())


def seqs(store: Store, station: str) -> list[int]:
    return [r.seq for r in store.query(StationReadings(station, 0, LAST_MS, limit=10_000)).rows]


def test_a_reading_detection_chokes_on_is_dead_lettered_and_the_rest_scored_once(
    store: Store,
) -> None:
    bus = new_bus()
    records = [reading(f"s{i % 7}", i) for i in range(300)]
    records[137] = reading("s4", 137, POISON)
    bus.publish(TOPIC, records)
    detector = Choking(load_settings().sensor_names)
    metrics = Metrics()
    engine = engine_over(bus, store, detector, metrics)

    result = engine.step()

    assert result is not None and (result.readings, result.dead_letters) == (299, 1)
    [letter] = store.query(DeadLetters())
    assert letter.kind == "poison"
    assert "detection failed on this reading: ZeroDivisionError" in letter.reason
    assert letter.source == f"{TOPIC}/0/137"
    assert str(POISON).encode() in letter.payload
    assert seqs(store, "s4") == [i for i in range(300) if i % 7 == 4 and i != 137]
    assert metrics.batch_splits._value.get() >= 1
    assert bus.lag(TOPIC, "faultline-engine") == 0
    # And the stream goes on.
    bus.publish(TOPIC, [reading("s4", 400)])
    assert engine.step() is not None
    assert seqs(store, "s4")[-1] == 400


def test_a_poison_reading_alone_in_its_batch_does_not_stop_the_engine(store: Store) -> None:
    bus = new_bus()
    bus.publish(TOPIC, [reading("s1", 1, POISON)])
    engine = engine_over(bus, store, Choking(load_settings().sensor_names), Metrics())

    result = engine.step()

    assert result is not None and (result.readings, result.dead_letters) == (0, 1)
    assert [d.kind for d in store.query(DeadLetters())] == ["poison"]


def test_readings_the_store_refuses_as_invalid_are_isolated_and_dead_lettered(
    store: Store,
) -> None:
    bus = new_bus()
    records = [reading("good", i) for i in range(40)]
    records[5] = reading("bad", 5)
    records[31] = reading("bad", 31)
    bus.publish(TOPIC, [*records, Record(b"not json")])
    engine = engine_over(bus, Refusing(store), Choking(load_settings().sensor_names), Metrics())

    result = engine.step()

    assert result is not None
    assert seqs(store, "good") == [i for i in range(40) if i not in (5, 31)]
    letters = {d.source: d for d in store.query(DeadLetters())}
    assert {letters[f"{TOPIC}/0/{i}"].kind for i in (5, 31)} == {"store"}
    assert "the store refused this reading: station 'bad'" in letters[f"{TOPIC}/0/5"].reason
    assert letters[f"{TOPIC}/0/40"].kind == "malformed"  # the batch's own dead letter kept too
    assert bus.lag(TOPIC, "faultline-engine") == 0
