"""Throughput and latency of the embedded pipeline: bus → decode → detect → SQLite → ack.

Prints, for the deployed default detector set (the streaming default + seed 000's 1000-tree
IsolationForest in its compiled form, as a registered model scores) and for the streaming
detector alone:
  * kernel: decode + score alone on the same batches, no bus and no store (the baseline);
  * pipeline: the real Engine over a MemoryBus into a SqliteStore, backlog drained flat out;
  * the ratio pipeline/kernel, so the pipeline's overhead shows;
  * where the pipeline's time goes: the run's wall time split by stage (bus, decode, each
    detector, alarms, checkpoints, the store's validation, verdict encoding, reading insert,
    station summaries, minute aggregates, commit, acknowledgement), as µs per reading and as
    a share of the run, measured by timers around the functions and statements that do each
    stage's work (a few calls per batch, so they cost nothing measurable);
  * paced latency: a producer publishing at a fixed rate while the engine runs, p50/p99 of
    bus acceptance → verdict committed;
  * detector state per station and sensor (the checkpoint dump, and the memory tracemalloc
    sees the state take), against the 1 KB target;
  * peak RSS of the process; last, one JSON line with every figure.

    PYTHONPATH=src .venv/bin/python bench/bench_pipeline.py [--stations 1000] [--ticks 100]
        [--rate 5000] [--profile FILE]

`--profile FILE` also runs the default pipeline once more under cProfile, writes the stats to
FILE (read them with `python -m pstats FILE`) and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sqlite3
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from faultline.bus import MemoryBus, Record
from faultline.clock import SystemClock
from faultline.codec import RawMessage, ReadingDecoder
from faultline.config import Settings, load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine import Engine
from faultline.engine.alarming import EngineAlarms
from faultline.engine.checkpoint import Checkpointer
from faultline.metrics import Metrics
from faultline.models.base import ModelInfo
from faultline.models.compiled import compile_forest
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.schema import RECEIVED_AT
from faultline.simulate import Simulator, normal_frame
from faultline.store import SqliteStore, open_store
from faultline.store import sqlite as sqlite_store
from faultline.store.alarm_sql import AlarmWrites
from faultline.store.columns import BatchColumns

TOPIC = "bench.readings"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The stages in the order a reading meets them; "engine (rest)" is the engine's own code
# between them, "unattributed" the rest of the run's wall time (the bench's loop, GC).
STAGES = (
    "bus consume",
    "decode",
    "detect: {streaming}",
    "detect: isolation_forest",
    "detect: combine verdicts",
    "alarms",
    "checkpoints",
    "store: validate + columns",
    "store: verdict encoding",
    "store: insert readings",
    "store: station summaries",
    "store: minute aggregates",
    "store: alarms",
    "store: begin + commit",
    "store: rest",
    "ack",
    "engine metrics",
    "engine (rest)",
    "unattributed",
)


class Stages:
    """Exclusive wall time per stage: a stage entered inside another is taken out of it, so the
    stages add up to the time spent inside any of them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: list[list[Any]] = []  # [stage, started, time of stages inside it]
        self._undo: list[Callable[[], None]] = []

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        entry: list[Any] = [stage, time.perf_counter(), 0.0]
        self._open.append(entry)
        try:
            yield
        finally:
            self._open.pop()
            spent = time.perf_counter() - entry[1]
            self.seconds[stage] += spent - entry[2]
            if self._open:
                self._open[-1][2] += spent

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        """Time every call of `owner.name` as `stage`, until `restore`: a method of a class, a
        module's function, or an object's method (shadowed on that object alone)."""
        instance = not isinstance(owner, type | ModuleType)
        original = getattr(owner, name) if instance else owner.__dict__[name]

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timed(stage):
                return original(*args, **kwargs)

        setattr(owner, name, timed)
        self._undo.append(
            (lambda: delattr(owner, name)) if instance else lambda: setattr(owner, name, original)
        )

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


class TimedConnection:
    """The store's writing connection, each statement timed as the stage it serves."""

    def __init__(self, conn: sqlite3.Connection, stages: Stages) -> None:
        self._conn = conn
        self._stages = stages
        self._stage_of = {
            sqlite_store._INSERT_READINGS: "store: insert readings",
            sqlite_store._UPDATE_STATION: "store: station summaries",
            sqlite_store._ADD_MINUTE: "store: minute aggregates",
            sqlite_store._ADD_ANOMALY_MINUTE: "store: minute aggregates",
            "BEGIN IMMEDIATE": "store: begin + commit",
            "COMMIT": "store: begin + commit",
        }

    def execute(self, statement: str, *args: Any) -> sqlite3.Cursor:
        return self._timed(self._conn.execute, statement, *args)

    def executemany(self, statement: str, *args: Any) -> sqlite3.Cursor:
        return self._timed(self._conn.executemany, statement, *args)

    def _timed(self, run: Callable[..., sqlite3.Cursor], statement: str, *args: Any) -> Any:
        stage = self._stage_of.get(statement)
        if stage is None:  # the enclosing stage's (a savepoint in the insert, alarm upserts)
            return run(statement, *args)
        with self._stages.timed(stage):
            return run(statement, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def instrument(stages: Stages, engine: Engine, store: SqliteStore, streaming: str) -> None:
    """Put the stage timers around the functions and statements of `engine` and `store`."""
    wrap = stages.wrap
    wrap(Engine, "step", "engine (rest)")
    wrap(Engine, "checkpoint", "engine (rest)")
    wrap(Engine, "poll", "bus consume")
    wrap(Engine, "_ack", "ack")
    wrap(Engine, "_observe", "engine metrics")
    wrap(ReadingDecoder, "decode", "decode")
    wrap(DetectorPipeline, "run", "detect: combine verdicts")
    for detector in engine._pipeline().detectors:
        name = "isolation_forest" if detector.name != streaming else streaming
        wrap(detector, "process", f"detect: {name}")
    wrap(EngineAlarms, "step", "alarms")
    for method in ("admit", "learned", "due", "take", "stored"):
        wrap(Checkpointer, method, "checkpoints")
    wrap(SqliteStore, "write", "store: rest")
    wrap(sqlite_store, "validate", "store: validate + columns")
    wrap(sqlite_store, "_reading_tuples", "store: verdict encoding")
    wrap(sqlite_store, "_insert_readings", "store: insert readings")
    for method in ("counts_per_station", "latest_per_station"):
        wrap(BatchColumns, method, "store: station summaries")
    wrap(sqlite_store, "_station_rows", "store: station summaries")
    wrap(BatchColumns, "minute_partials", "store: minute aggregates")
    wrap(BatchColumns, "anomaly_minutes", "store: minute aggregates")
    wrap(sqlite_store, "partial_rows", "store: minute aggregates")
    wrap(AlarmWrites, "store", "store: alarms")
    store._writer = TimedConnection(store._writer, stages)  # type: ignore[assignment]


def make_records(settings: Settings, stations: int, ticks: int) -> list[Record]:
    sim = Simulator(settings.sensors, stations=stations, seed=1, faults_per_station_hour=2.0)
    now = SystemClock().now_ms()
    ts = now - 1000 * ticks + np.arange(ticks, dtype=np.int64) * 1000
    return sim.block(ts).records()


def kernel_rate(settings: Settings, records: list[Record], model: SklearnModel | None) -> float:
    decoder = ReadingDecoder(settings.sensors, settings.ingest)
    pipeline = DetectorPipeline(build_detectors(settings, model))
    size = settings.engine.batch_max_records
    now = SystemClock().now_ms()
    raws = [RawMessage(r.value, f"b/0/{i}", now, i) for i, r in enumerate(records)]
    # Once on a few readings first, so that loading (or compiling) the numba kernels is not
    # timed; a fresh pipeline then, so that every station starts cold as in the engine.
    pipeline.run(decoder.decode(raws[:1000]).readings)
    pipeline = DetectorPipeline(build_detectors(settings, model))
    started = time.perf_counter()
    for lo in range(0, len(raws), size):
        pipeline.run(decoder.decode(raws[lo : lo + size]).readings)
    return len(raws) / (time.perf_counter() - started)


def engine_for(
    settings: Settings, bus: MemoryBus, store: SqliteStore, model: SklearnModel | None
) -> Engine:
    return Engine(
        bus=bus,
        topic=TOPIC,
        store=store,
        decoder=ReadingDecoder(settings.sensors, settings.ingest),
        pipeline=DetectorPipeline(build_detectors(settings, model)),
        settings=settings.engine,
        metrics=Metrics(),
    )


def sqlite_store_at(db: Path) -> SqliteStore:
    store = open_store(f"sqlite:///{db}")
    assert isinstance(store, SqliteStore)
    return store


def pipeline_rate(
    settings: Settings,
    records: list[Record],
    model: SklearnModel | None,
    db: Path,
    stages: Stages | None = None,
) -> tuple[float, Engine]:
    """Readings/s through the engine, backlog drained flat out; with `stages`, timed by stage."""
    bus = MemoryBus(max_messages=len(records) + 1, max_bytes=2**40)
    bus.publish(TOPIC, records)
    store = sqlite_store_at(db)
    # The whole backlog waits on the bus, so every batch is full at once but the last, which
    # would wait batch_max_wait_s for readings that never come: not the engine's work.
    drain = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"batch_max_wait_s": 0.001})}
    )
    engine = engine_for(drain, bus, store, model)
    if stages is not None:
        instrument(stages, engine, store, settings.detect.detector)
    stop = threading.Event()
    try:
        started = time.perf_counter()
        done = 0
        while done < len(records):
            result = engine.step(stop)
            done += 0 if result is None else result.messages
        # The last checkpoint and acknowledgement now, as at shutdown, rather than after the
        # idle polls that wait for checkpoint_interval_s.
        engine.checkpoint(stop)
        elapsed = time.perf_counter() - started
    finally:
        if stages is not None:
            stages.restore()
    if stages is not None:
        stages.seconds["unattributed"] = elapsed - sum(stages.seconds.values())
    return len(records) / elapsed, engine


def paced_latency(
    settings: Settings, records: list[Record], model: SklearnModel | None, db: Path, rate: float
) -> tuple[float, float, float]:
    """p50, p99 and max of bus acceptance → verdict committed, in milliseconds."""
    bus = MemoryBus()
    engine = engine_for(settings, bus, sqlite_store_at(db), model)
    clock = SystemClock()
    stop = threading.Event()
    chunk = max(1, int(rate / 100))  # publish every 10 ms

    def produce() -> None:
        started = time.perf_counter()
        for i in range(0, len(records), chunk):
            due = started + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            bus.publish(TOPIC, records[i : i + chunk])
        stop.set()

    producer = threading.Thread(target=produce)
    producer.start()
    latencies: list[np.ndarray] = []
    done = 0
    while done < len(records):
        messages = engine.poll()
        if not messages:
            if stop.is_set() and done >= len(records):
                break
            continue
        prepared = engine.prepare(messages)
        engine.commit(messages, prepared, threading.Event())
        committed = clock.now_ms()
        latencies.append(committed - prepared.batch.readings[RECEIVED_AT].to_numpy())
        done += len(messages)
    producer.join()
    all_ms = np.concatenate(latencies)
    return (
        float(np.percentile(all_ms, 50)),
        float(np.percentile(all_ms, 99)),
        float(all_ms.max()),
    )


def state_size(settings: Settings, stations: int, ticks: int) -> dict[str, float]:
    """Detector state per station and sensor once `stations` stations have learned `ticks`
    readings each: the streaming detector's checkpoint dump, and the memory its state holds as
    tracemalloc sees it (numpy's buffers included; the batches fed to it are made before
    tracing starts and their copies freed, so what stays is the state). The forest keeps no
    state per station: its model is shared."""
    decoder = ReadingDecoder(settings.sensors, settings.ingest)
    now = SystemClock().now_ms()
    records = make_records(settings, stations, ticks)
    raws = [RawMessage(r.value, f"b/0/{i}", now, i) for i, r in enumerate(records)]
    del records
    size = settings.engine.batch_max_records
    frames = [decoder.decode(raws[lo : lo + size]).readings for lo in range(0, len(raws), size)]
    del raws
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    pipeline = DetectorPipeline(build_detectors(settings, None))
    for frame in frames:
        pipeline.run(frame)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    cells = stations * len(settings.sensor_names)
    return {
        "stations": stations,
        "sensors": len(settings.sensor_names),
        "dump_bytes_per_station_sensor": len(pipeline.dump()) / cells,
        "held_bytes_per_station_sensor": held / cells,
    }


def stage_table(stages: Stages, readings: int, streaming: str) -> dict[str, float]:
    """µs per reading of each stage, in the order of STAGES (stages that took no time left out)."""
    order = [stage.format(streaming=streaming) for stage in STAGES]
    return {
        stage: 1e6 * stages.seconds[stage] / readings
        for stage in order
        if stages.seconds.get(stage, 0.0) != 0.0
    }


def print_profile(path: Path, top: int = 20) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5000.0, help="paced readings/s")
    parser.add_argument("--state-stations", type=int, default=10_000)
    parser.add_argument("--state-ticks", type=int, default=100)
    parser.add_argument("--profile", type=Path, help="also write a cProfile of the default run")
    args = parser.parse_args()

    settings = load_settings()
    records = make_records(settings, args.stations, args.ticks)
    m = settings.model
    frame = normal_frame(settings.sensors, m.train_samples, seed=0)
    forest = train_isolation_forest(
        frame,
        settings.sensor_names,
        n_estimators=m.n_estimators,
        contamination=m.contamination,
        seed=0,
    )
    info = ModelInfo("bench", "1", "bench-run", "champion", 0)
    # A registered model scores with its compiled form (models/compiled.py), so that is the
    # deployed default; the registry checks it scores exactly as scikit-learn does.
    model = SklearnModel(forest, info, settings.sensor_names, frame, compile_forest(forest))

    print(f"readings: {len(records):,} ({args.stations} stations x {args.ticks} ticks)")
    print(f"batch: up to {settings.engine.batch_max_records} messages")
    streaming = settings.detect.detector
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        configurations = (
            (f"{streaming} + compiled isolation_forest({m.n_estimators})", model),
            (streaming, None),
        )
        for n, (label, chosen) in enumerate(configurations):
            kernel = kernel_rate(settings, records, chosen)
            stages = Stages()
            full, _ = pipeline_rate(settings, records, chosen, Path(tmp) / f"run{n}.db", stages)
            paced = records[: int(args.rate * 10)]
            p50, p99, worst = paced_latency(
                settings, paced, chosen, Path(tmp) / f"run{n}-paced.db", args.rate
            )
            table = stage_table(stages, len(records), streaming)
            print(f"\n[{label}]")
            print(f"  kernel (decode+score)       {kernel:12,.0f} readings/s")
            print(f"  pipeline (bus→store→ack)    {full:12,.0f} readings/s")
            print(f"  pipeline / kernel           {full / kernel:12.2f}")
            print(
                f"  latency at {args.rate:,.0f}/s       p50 {p50:.0f} ms  p99 {p99:.0f} ms  "
                f"max {worst:.0f} ms"
            )
            total = sum(table.values())
            print(f"  {'stage':<30} {'µs/reading':>10} {'share':>7}")
            for stage, us in table.items():
                print(f"  {stage:<30} {us:10.2f} {us / total:7.1%}")
            print(f"  {'total':<30} {total:10.2f}")
            results.append(
                {
                    "detectors": label,
                    "kernel_rps": kernel,
                    "pipeline_rps": full,
                    "ratio": full / kernel,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "max_ms": worst,
                    "stage_us_per_reading": table,
                }
            )
        if args.profile is not None:
            profiler = cProfile.Profile()
            profiler.enable()
            pipeline_rate(settings, records, model, Path(tmp) / "profiled.db")
            profiler.disable()
            profiler.dump_stats(str(args.profile))
            print(f"\ncProfile of [{configurations[0][0]}] written to {args.profile}:")
            print_profile(args.profile)
    state = state_size(settings, args.state_stations, args.state_ticks)
    per_cell = state["held_bytes_per_station_sensor"]
    print(
        f"\n{streaming} state per station and sensor ({state['stations']:,} stations x "
        f"{state['sensors']} sensors, {args.state_ticks} readings each): held {per_cell:,.0f} B,"
        f" checkpoint dump {state['dump_bytes_per_station_sensor']:,.0f} B"
        f" (target ≤ 1,024 B: {per_cell / 1024:.2f}x of it)"
    )
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    default = results[0]
    summary = {
        "bench": "pipeline",
        "readings": len(records),
        "stations": args.stations,
        "rate": args.rate,
        "pipeline_rps": default["pipeline_rps"],
        "kernel_rps": default["kernel_rps"],
        "ratio": default["ratio"],
        "p99_ms_at_rate": default["p99_ms"],
        "state_bytes_per_station_sensor": per_cell,
        "state_dump_bytes_per_station_sensor": state["dump_bytes_per_station_sensor"],
        "peak_rss_mb": peak_rss_mb(),
        "configurations": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
