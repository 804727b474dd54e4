"""The in-process engine's hot swap, as `faultline up` assembles it: the runtime's engine over a
running stream while the champion alias is promoted to another version and rolled back."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from faultline.bus import Record
from faultline.clock import SystemClock
from faultline.codec import encode_reading
from faultline.config import Settings, load_settings
from faultline.models.isolation_forest import train_isolation_forest
from faultline.runtime import Runtime
from faultline.schema import MODEL_VERSION, SEQ, STATION_ID, WriteBatch, score_column
from faultline.simulate import normal_frame
from faultline.store import StationReadings, Store
from faultline.store.base import LAST_MS
from faultline.store.forwarding import ForwardingStore

STATIONS = ("s1", "s2", "s3")
WARMUP = 10


class RecordingStore(ForwardingStore):
    """Keeps what every write carried: one write per engine batch."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.writes: list[WriteBatch] = []
        self.lock = threading.Lock()

    def write(self, batch: WriteBatch) -> None:
        self.inner.write(batch)
        with self.lock:
            self.writes.append(batch)

    def scored(self) -> list[WriteBatch]:
        with self.lock:
            return [b for b in self.writes if len(b.readings)]


class Stream:
    """One reading per station every few milliseconds, seq numbers from 0, until stopped."""

    def __init__(self, runtime: Runtime, t0: int, first_seq: int = 0) -> None:
        self.runtime = runtime
        self.sent = first_seq  # readings per station
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self.rng = np.random.default_rng(first_seq)
        self.t0 = t0

    def _run(self) -> None:
        s = self.runtime.settings
        while not self.stop.wait(0.004):
            seq = self.sent
            records = []
            for station in STATIONS:
                values = {
                    name: float(self.rng.normal(spec.mean, spec.std))
                    for name, spec in s.sensors.items()
                }
                value = encode_reading(station, self.t0 + 100 * seq, seq, values)
                records.append(Record(value, station.encode()))
            self.runtime.bus.publish(s.readings_topic, records)
            self.sent += 1


def wait_until(done: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        store_url=f"sqlite:///{tmp_path / 'faultline.db'}",
        bus_url=f"sqlite:///{tmp_path / 'bus.db'}",
        model={"n_estimators": 20, "train_samples": 2000},
        detect={"warmup": WARMUP},
        engine={"batch_max_records": 20, "batch_max_wait_s": 0.02},
        lifecycle={"swap_interval_s": 0.05},
    )


@pytest.fixture
def runtimes(settings: Settings) -> Iterator[Callable[[], tuple[Runtime, RecordingStore]]]:
    """Starts runtimes over the same data directory (a process and its restart)."""
    started: list[Runtime] = []

    def start() -> tuple[Runtime, RecordingStore]:
        if started:
            started[-1].shutdown()
        rt = Runtime(settings)
        started.append(rt)
        store = RecordingStore(rt.store)
        rt.store = store
        return rt, store

    yield start
    started[-1].shutdown()


def unscored(store: RecordingStore, station: str) -> list[int]:
    """The positions of `station`'s readings, in the order they were scored, that have no
    verdict of the streaming detector (its warm-up)."""
    scores = [
        score
        for b in store.scored()
        for sid, score in zip(
            b.readings[STATION_ID], b.readings[score_column("surprise")], strict=True
        )
        if sid == station
    ]
    return [i for i, score in enumerate(scores) if math.isnan(score)]


def test_promotion_and_rollback_swap_the_running_engine_between_batches(
    runtimes: Callable[[], tuple[Runtime, RecordingStore]], settings: Settings
) -> None:
    runtime, store = runtimes()
    registry = runtime.load_model()
    first = registry.current().info
    frame = normal_frame(settings.sensors, 2000, seed=3)
    forest = train_isolation_forest(
        frame, settings.sensor_names, n_estimators=20, contamination=0.01, seed=3
    )
    second = registry.register(
        forest, settings.sensor_names, frame.iloc[:500], {"seed": 3}, alias="challenger"
    )
    runtime.start_engine()
    t0 = SystemClock().now_ms() - 3_600_000
    stream = Stream(runtime, t0)
    stream.thread.start()

    def versions() -> list[str]:
        """The model version of each scored batch, in order, repeats collapsed."""
        out: list[str] = []
        for batch in store.scored():
            version = batch.readings[MODEL_VERSION].iloc[0]
            if not out or out[-1] != version:
                out.append(version)
        return out

    def stored() -> int:
        return sum(len(b.readings) for b in store.scored())

    try:
        wait_until(lambda: stored() >= 60, "readings scored by the first model")
        registry.point(settings.model.alias, second.version)  # a promotion
        wait_until(lambda: len(versions()) >= 2, "the promoted version in the running engine")
        promoted_at = stored()
        wait_until(lambda: stored() >= promoted_at + 60, "readings scored by the second model")
        registry.point(settings.model.alias, first.version)  # a rollback
        wait_until(lambda: len(versions()) >= 3, "the rollback in the running engine")
        rolled_back_at = stored()
        wait_until(lambda: stored() >= rolled_back_at + 60, "readings after the rollback")
    finally:
        stream.stop.set()
        stream.thread.join(10)
    total = stream.sent * len(STATIONS)
    wait_until(lambda: stored() == total, f"all {total} published readings")

    assert versions() == [first.run_id, second.run_id, first.run_id]
    for batch in store.scored():  # one batch, one model version
        assert batch.readings[MODEL_VERSION].nunique() == 1
    # Nothing lost, nothing scored twice: every seq once in the store and once in the writes.
    written = [
        (station, seq)
        for b in store.scored()
        for station, seq in zip(b.readings[STATION_ID], b.readings[SEQ], strict=True)
    ]
    assert len(written) == len(set(written)) == total
    for station in STATIONS:
        page = runtime.store.query(StationReadings(station, 0, LAST_MS, limit=100_000))
        assert sorted(r.seq for r in page.rows) == list(range(stream.sent))
    # The streaming detector kept its state through both swaps: after its first warm-up every
    # reading has a verdict; a reset would have left WARMUP more without one per station.
    for station in STATIONS:
        warming = unscored(store, station)
        assert warming == list(range(len(warming))) and len(warming) <= WARMUP
    exposition = runtime.metrics.exposition().decode()
    assert f'faultline_model_info{{name="{first.name}",version="{first.run_id}"}} 1.0' in exposition
    assert second.run_id not in exposition

    # The engine stops (checkpointing, the model's part naming the first version) and a
    # promotion happens while it is down: the restarted engine scores with the second model
    # from the stations' checkpointed state, without a new warm-up.
    sent = stream.sent
    registry.point(settings.model.alias, second.version)
    runtime, store = runtimes()
    runtime.start_engine()
    stream = Stream(runtime, t0, first_seq=sent)
    stream.thread.start()
    try:
        wait_until(lambda: stored() >= 60, "readings after the restart")
    finally:
        stream.stop.set()
        stream.thread.join(10)
    total = (stream.sent - sent) * len(STATIONS)
    wait_until(lambda: stored() == total, f"all {total} readings published after the restart")
    assert versions() == [second.run_id]
    for station in STATIONS:
        assert unscored(store, station) == []
