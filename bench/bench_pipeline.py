"""Throughput and latency of the embedded pipeline: bus → decode → detect → SQLite → ack.

Prints, for the default detector set (the streaming default + seed 000's 1000-tree
IsolationForest) and for the streaming detector alone:
  * kernel: decode + score alone on the same batches, no bus and no store (the baseline);
  * pipeline: the real Engine over a MemoryBus into a SqliteStore, backlog drained flat out;
  * the ratio pipeline/kernel, so the pipeline's overhead shows;
  * paced latency: a producer publishing at a fixed rate while the engine runs, p50/p99 of
    bus acceptance → verdict committed;
  * peak RSS of the process.

    .venv/bin/python bench/bench_pipeline.py [--stations 1000] [--ticks 100] [--rate 5000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from faultline.bus import MemoryBus, Record
from faultline.clock import SystemClock
from faultline.codec import RawMessage, ReadingDecoder
from faultline.config import Settings, load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine import Engine
from faultline.metrics import Metrics
from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.schema import RECEIVED_AT
from faultline.simulate import Simulator, normal_frame
from faultline.store import open_store

TOPIC = "bench.readings"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    started = time.perf_counter()
    for lo in range(0, len(raws), size):
        pipeline.run(decoder.decode(raws[lo : lo + size]).readings)
    return len(raws) / (time.perf_counter() - started)


def engine_for(settings: Settings, bus: MemoryBus, db: Path, model: SklearnModel | None) -> Engine:
    return Engine(
        bus=bus,
        topic=TOPIC,
        store=open_store(f"sqlite:///{db}"),
        decoder=ReadingDecoder(settings.sensors, settings.ingest),
        pipeline=DetectorPipeline(build_detectors(settings, model)),
        settings=settings.engine,
        metrics=Metrics(),
    )


def pipeline_rate(
    settings: Settings, records: list[Record], model: SklearnModel | None, db: Path
) -> float:
    bus = MemoryBus(max_messages=len(records) + 1, max_bytes=2**40)
    bus.publish(TOPIC, records)
    engine = engine_for(settings, bus, db, model)
    group = settings.engine.consumer_group
    started = time.perf_counter()
    while bus.lag(TOPIC, group) > 0:
        engine.step()
    return len(records) / (time.perf_counter() - started)


def paced_latency(
    settings: Settings, records: list[Record], model: SklearnModel | None, db: Path, rate: float
) -> tuple[float, float, float]:
    """p50, p99 and max of bus acceptance → verdict committed, in milliseconds."""
    bus = MemoryBus()
    engine = engine_for(settings, bus, db, model)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5000.0, help="paced readings/s")
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
    model = SklearnModel(forest, info, settings.sensor_names, frame)

    print(f"readings: {len(records):,} ({args.stations} stations x {args.ticks} ticks)")
    print(f"batch: up to {settings.engine.batch_max_records} messages")
    with tempfile.TemporaryDirectory() as tmp:
        streaming = settings.detect.detector
        configurations = ((f"{streaming} + isolation_forest(1000)", model), (streaming, None))
        for n, (label, chosen) in enumerate(configurations):
            kernel = kernel_rate(settings, records, chosen)
            full = pipeline_rate(settings, records, chosen, Path(tmp) / f"run{n}.db")
            paced = records[: int(args.rate * 10)]
            p50, p99, worst = paced_latency(
                settings, paced, chosen, Path(tmp) / f"run{n}-paced.db", args.rate
            )
            print(f"\n[{label}]")
            print(f"  kernel (decode+score)       {kernel:12,.0f} readings/s")
            print(f"  pipeline (bus→store→ack)    {full:12,.0f} readings/s")
            print(f"  pipeline / kernel           {full / kernel:12.2f}")
            print(
                f"  latency at {args.rate:,.0f}/s       p50 {p50:.0f} ms  p99 {p99:.0f} ms  "
                f"max {worst:.0f} ms"
            )
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
