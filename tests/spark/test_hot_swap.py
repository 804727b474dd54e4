"""The Spark engine's hot swap (docs/decisions/0019-spark-hot-swap.md): the model schedule's rules
without Spark, a worker's lookup in a real registry, and a promotion and a rollback under a
running stream on a real local Spark and a real Kafka broker."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from confluent_kafka import Producer

from faultline.bus.kafka import KafkaBus
from faultline.clock import SystemClock
from faultline.codec import encode_reading
from faultline.config import Settings
from faultline.engine.spark.schedule import (
    EMPTY,
    Entry,
    Schedule,
    ScheduleKeeper,
    ScheduleReader,
    read_schedule,
    schedule_path,
    write_schedule,
)
from faultline.metrics import Metrics
from faultline.models.base import ModelInfo
from faultline.models.champion import ensure_model, model_registry
from faultline.models.isolation_forest import train_isolation_forest
from faultline.models.registry import MlflowModelRegistry
from faultline.simulate import normal_frame
from faultline.store import open_store
from tests.spark.conftest import SettingsFactory
from tests.spark.streams import spark_engine_thread, stored_counts, verdicts, wait_until

pytest.importorskip("pyspark", reason="pyspark not installed: pip install -e '.[spark]'")

from faultline.engine.spark.worker_cache import ScheduleMismatch, batch_model

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# A few small trees: the test is about which version scores, not how well.
SMALL_MODEL = {"n_estimators": 8, "train_samples": 1000}
STATIONS = ("s1", "s2", "s3", "s4")


@dataclass(frozen=True)
class Champion:
    """A unit-level stand-in for a loaded model: the keeper reads only its identity."""

    info: ModelInfo


def champion(version: str) -> Champion:
    return Champion(ModelInfo("forest", version, f"run-{version}", "champion", 0))


def test_a_schedule_gets_an_entry_only_when_a_new_micro_batch_starts_with_another_version() -> None:
    first = EMPTY.begin(0, "1", "run-1")
    assert first == Schedule(0, (Entry(0, "1", "run-1"),))
    same = first.begin(1, "1", "run-1")
    assert same == Schedule(1, first.entries)
    promoted = same.begin(2, "2", "run-2")
    assert promoted.entries == (*first.entries, Entry(2, "2", "run-2"))
    # Micro-batch 2 again (the job died in it) while the alias moved on: it scores as its
    # first attempt did, whose rows may be stored already.
    assert promoted.begin(2, "3", "run-3") is promoted
    assert promoted.begin(1, "3", "run-3") is promoted
    rolled_back = promoted.begin(7, "1", "run-1")
    assert rolled_back.started == 7
    assert rolled_back.entries[-1] == Entry(7, "1", "run-1")
    assert [rolled_back.entry_for(b) for b in (0, 1, 2, 6, 7, 50)] == [
        Entry(0, "1", "run-1"),
        Entry(0, "1", "run-1"),
        Entry(2, "2", "run-2"),
        Entry(2, "2", "run-2"),
        Entry(7, "1", "run-1"),
        Entry(7, "1", "run-1"),
    ]
    # A checkpoint older than schedules gets its first entry at the batch it resumed at.
    assert EMPTY.begin(40, "1", "run-1").entry_for(39) is None
    assert EMPTY.entry_for(0) is None


def test_the_schedule_file_is_replaced_whole_and_read_again_only_when_replaced(
    tmp_path: Path,
) -> None:
    path = schedule_path(tmp_path / "checkpoint")
    reader = ScheduleReader(path)
    assert read_schedule(path) is None and reader.entry_for(3) is None
    schedule = EMPTY.begin(0, "1", "run-1")
    write_schedule(path, schedule)
    inode = path.stat().st_ino
    assert read_schedule(path) == schedule and reader.entry_for(3) == Entry(0, "1", "run-1")
    schedule = schedule.begin(3, "2", "run-2")
    write_schedule(path, schedule)
    # A rename, never a rewrite in place: a worker reads the old file or the new one.
    assert path.stat().st_ino != inode
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert read_schedule(path) == schedule and reader.entry_for(3) == Entry(3, "2", "run-2")
    # Rewritten in place to the same size with its times put back: the file looks unchanged.
    # What the reader holds stays right for the micro-batches it saw started, whose entries
    # never change; one started after them makes it read again.
    stat = path.stat()
    marked = Schedule(4, (Entry(0, "1", "run-1"), Entry(3, "2", "run-9")))
    path.write_text(marked.to_json())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_size) == (stat.st_ino, stat.st_size)
    assert reader.entry_for(3) == Entry(3, "2", "run-2")
    assert reader.entry_for(4) == Entry(3, "2", "run-9")
    path.unlink()
    assert reader.entry_for(3) is None
    path.write_text(json.dumps({"format": 99, "started": 0, "entries": []}))
    with pytest.raises(ValueError, match="unknown format"):
        read_schedule(path)


def test_the_keeper_records_every_start_and_a_restarted_one_replays_with_the_old_version(
    tmp_path: Path,
) -> None:
    path = schedule_path(tmp_path)
    serving: list[Any] = [champion("1")]
    metrics = Metrics()
    keeper = ScheduleKeeper(path, lambda: serving[0], metrics, "forest")
    assert 'version="run-1"' in metrics.exposition().decode()
    assert keeper.begin(0) == Entry(0, "1", "run-1")
    serving[0] = champion("2")  # the watcher loaded a promoted version
    assert keeper.begin(1) == Entry(1, "2", "run-2")
    shown = metrics.exposition().decode()
    assert 'version="run-2"' in shown and "run-1" not in shown
    assert read_schedule(path) == Schedule(1, (Entry(0, "1", "run-1"), Entry(1, "2", "run-2")))

    # The job died in micro-batch 1 and restarts while the alias names version 3.
    serving[0] = champion("3")
    metrics = Metrics()
    restarted = ScheduleKeeper(path, lambda: serving[0], metrics, "forest")
    assert 'version="run-2"' in metrics.exposition().decode()
    assert restarted.begin(1) == Entry(1, "2", "run-2")
    assert read_schedule(path) == Schedule(1, (Entry(0, "1", "run-1"), Entry(1, "2", "run-2")))
    assert restarted.begin(2) == Entry(2, "3", "run-3")
    assert 'version="run-3"' in metrics.exposition().decode()


def second_version(settings: Settings, registry: MlflowModelRegistry) -> ModelInfo:
    """Another forest registered beside the champion, not serving yet."""
    frame = normal_frame(settings.sensors, 1000, seed=3)
    forest = train_isolation_forest(
        frame, settings.sensor_names, n_estimators=8, contamination=0.01, seed=3
    )
    return registry.register(
        forest, settings.sensor_names, frame.iloc[:300], {"seed": 3}, alias="challenger"
    )


def test_a_worker_scores_a_micro_batch_with_the_version_its_schedule_names(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(bus_url="memory://", data_dir=tmp_path, model=SMALL_MODEL)
    registry = model_registry(settings)
    first = ensure_model(settings, registry)
    second = second_version(settings, registry)
    path = schedule_path(tmp_path / "checkpoint")
    # No schedule, no micro-batch id: the alias's version, as before schedules.
    assert batch_model(settings, path, 4).info.run_id == first.run_id
    write_schedule(path, Schedule(5, (Entry(0, "1", first.run_id), Entry(4, "2", second.run_id))))
    assert batch_model(settings, path, 3).info.run_id == first.run_id
    model = batch_model(settings, path, 4)
    assert model.info.run_id == second.run_id
    assert batch_model(settings, path, 5) is model  # loaded once per worker and version
    assert batch_model(settings, None, 4).info.run_id == first.run_id
    assert batch_model(settings, path, None).info.run_id == first.run_id
    # A schedule from a job on another registry, whose version 1 was another run.
    write_schedule(path, Schedule(6, (Entry(6, "1", second.run_id),)))
    with pytest.raises(ScheduleMismatch, match="against its own registry"):
        batch_model(settings, path, 6)


class Publisher:
    """A round of one reading per station every 40 ms until stopped, keyed by station (a
    station's readings share a partition); where each reading landed in Kafka."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.landed: dict[tuple[str, int], tuple[int, int]] = {}
        self.errors: list[object] = []
        self.rounds = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self.t0 = SystemClock().now_ms() - 3_600_000
        self.rng = np.random.default_rng(7)
        self.sensors = settings.sensors

    def round(self) -> None:
        """One reading of each station, the next seq."""
        seq = self.rounds
        for station in STATIONS:
            values = {n: float(self.rng.normal(s.mean, s.std)) for n, s in self.sensors.items()}
            self.producer.produce(
                self.settings.readings_topic,
                value=encode_reading(station, self.t0 + 100 * seq, seq, values),
                key=station.encode(),
                on_delivery=lambda err, msg, at=(station, seq): self._landed(at, err, msg),
            )
        self.producer.poll(0)
        self.rounds += 1

    def flush(self) -> None:
        if self.producer.flush(30):
            self.errors.append("messages left unsent")

    def _run(self) -> None:
        while not self.stop.wait(0.04):
            self.round()
        self.flush()

    def _landed(self, at: tuple[str, int], err: object, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.landed[at] = (msg.partition(), msg.offset())


def batch_ranges(checkpoint: Path) -> list[dict[int, tuple[int, int]]]:
    """Each micro-batch's Kafka offsets per partition, [start, end), from the offset log (one
    file a micro-batch; its last line holds each partition's end offset; the topic is new)."""
    ranges: list[dict[int, tuple[int, int]]] = []
    ends: dict[int, int] = {}
    files = sorted((checkpoint / "offsets").glob("[0-9]*"), key=lambda p: int(p.name))
    assert [int(p.name) for p in files] == list(range(len(files))), "offset log pruned"
    for file in files:
        (partitions,) = json.loads(file.read_text().splitlines()[-1]).values()
        new = {int(p): int(end) for p, end in partitions.items()}
        ranges.append({p: (ends.get(p, 0), end) for p, end in new.items()})
        ends = new
    return ranges


def test_a_promotion_and_a_rollback_switch_the_running_job_at_micro_batch_boundaries(
    spark: SparkSession, make_settings: SettingsFactory, bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(
        data_dir=tmp_path / "models", model=SMALL_MODEL, lifecycle={"swap_interval_s": 0.1}
    )
    registry = model_registry(settings)
    first = ensure_model(settings, registry)
    second = second_version(settings, registry)
    bus = KafkaBus.from_url(settings.bus_url)
    bus.ensure_topic(settings.readings_topic)  # with its partitions, before the first message
    bus.close()
    checkpoint = tmp_path / "checkpoint"
    path = schedule_path(checkpoint)
    metrics = Metrics()
    store = open_store(settings.store_url)
    publisher = Publisher(settings, bootstrap)

    def entries() -> int:
        schedule = read_schedule(path) if path.exists() else None
        return 0 if schedule is None else len(schedule.entries)

    def readings() -> int:
        return stored_counts(store)[0]

    def more_readings(count: int) -> None:
        at = readings()
        wait_until(lambda: readings() >= at + count, 120, f"{count} more readings", readings)

    # Every micro-batch's offsets stay in the log for the test to read (Spark keeps 100).
    spark.conf.set("spark.sql.streaming.minBatchesToRetain", "100000")
    try:
        with spark_engine_thread(
            settings, checkpoint, spark=spark, trigger_s=0.25, metrics=metrics
        ) as running:
            # The job's first micro-batch (the Python workers start, load the model) takes
            # long: a stream published meanwhile would make its first micro-batches large.
            publisher.round()
            publisher.flush()
            wait_until(lambda: not running() or readings() > 0, 240, "the first readings")
            publisher.thread.start()
            more_readings(50)
            registry.point(settings.model.alias, second.version)  # a promotion
            wait_until(lambda: not running() or entries() == 2, 60, "the promotion", entries)
            more_readings(100)
            registry.point(settings.model.alias, first.version)  # a rollback
            wait_until(lambda: not running() or entries() == 3, 60, "the rollback", entries)
            more_readings(100)
            publisher.stop.set()
            publisher.thread.join(60)
            total = publisher.rounds * len(STATIONS)
            wait_until(lambda: not running() or readings() >= total, 120, f"all {total}", readings)
            assert running(), "the engine stopped by itself"
        stored = verdicts(store)
    finally:
        publisher.stop.set()
        spark.conf.unset("spark.sql.streaming.minBatchesToRetain")
        store.close()

    assert publisher.errors == []
    # Every published reading stored exactly once, and scored once: the driver counted each
    # micro-batch's readings as it stored them.
    published = {(station, publisher.t0 + 100 * seq, seq) for station, seq in publisher.landed}
    assert len(published) == total and set(stored) == published
    assert metrics.registry.get_sample_value("faultline_readings_total") == total
    version_at = {
        publisher.landed[(station, seq)]: row[3] for (station, _, seq), row in stored.items()
    }
    versions = [first.run_id, second.run_id, first.run_id]
    # Per Kafka partition in offset order: the first version, the second, the first again.
    partitions = {p for p, _ in version_at}
    assert len(partitions) > 1, "one partition cannot show partitions switching together"
    for partition in partitions:
        ordered = [v for (p, _), v in sorted(version_at.items()) if p == partition]
        assert [v for v, _ in groupby(ordered)] == versions, f"partition {partition}"
    # The driver decided twice, and every micro-batch, in all its partitions, scored with the
    # version the schedule names for it: the column changes only between micro-batches.
    schedule = read_schedule(path)
    assert schedule is not None
    assert [e.version for e in schedule.entries] == [first.version, second.version, first.version]
    for batch, ranges in enumerate(batch_ranges(checkpoint)):
        seen = {version_at[(p, o)] for p, (start, end) in ranges.items() for o in range(start, end)}
        entry = schedule.entry_for(batch)
        assert entry is not None and seen <= {entry.run_id}, f"micro-batch {batch}: {seen}"
    # The rollback reached the running job: it reports the first version again.
    shown = metrics.exposition().decode()
    assert f'faultline_model_info{{name="{first.name}",version="{first.run_id}"}} 1.0' in shown
    assert second.run_id not in shown
