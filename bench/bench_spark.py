"""Throughput and end-to-end latency of simulator → Kafka → Spark engine → store, on this machine.

Needs the Kafka broker svc.py starts and Java 17:

    scripts/services/svc.py run kafka -- .venv/bin/python bench/bench_spark.py [--rate 27000]

Prints:
  * kernel: the in-process decode + detect on the same kind of readings (the baseline);
  * capacity: a backlog published flat out and drained by the running Spark job (readings/s,
    and its ratio to the kernel);
  * paced runs: the simulator publishing at seed 003's 27,000 readings/s (90 stations at
    300 Hz) for `--seconds`, then, if the job cannot keep up, at each lower `--fallbacks` rate
    until one is sustainable; for each, the published and stored rates and the latency from a
    reading's event time (stamped when it is due, just before it is published) to the store
    commit that holds it: p50, p99, max. A rate is sustainable when the job keeps up: the
    backlog is stored within `--drain-s` of the last publish and p99 stays under
    `--p99-limit-s`.
The store is SQLite in a temporary directory unless `--store-url` names another.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from bench_pipeline import kernel_rate, make_records
from pyspark.sql.streaming import StreamingQuery

from faultline.bus.kafka import KafkaBus
from faultline.clock import SystemClock
from faultline.config import Settings, load_settings
from faultline.detect.factory import build_detectors
from faultline.engine.spark import spark_session, start_query, stop_between_batches
from faultline.runtime import ensure_model, model_registry
from faultline.schema import TS, WriteBatch
from faultline.simulate import Simulator, run_simulator
from faultline.store import Store, open_store
from faultline.store.forwarding import ForwardingStore

REPO = Path(__file__).resolve().parents[1]
STATIONS = 90  # seed 003: 90 sensors streaming 27,000 events/s together


class CommitProbe(ForwardingStore):
    """The real store, noting when each batch's commit returned and the event times it held."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.clock = SystemClock()
        self._lock = threading.Lock()
        self._ts: list[np.ndarray] = []
        self._committed: list[int] = []
        self._total = 0
        self.published = 0  # readings the bench published, for catching up

    def write(self, batch: WriteBatch) -> None:
        self.inner.write(batch)
        now = self.clock.now_ms()
        with self._lock:
            self._ts.append(batch.readings[TS].to_numpy())
            self._committed.append(now)
            self._total += len(batch.readings)

    def stored(self) -> int:
        """Readings stored since the start."""
        with self._lock:
            return self._total

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """Event times and commit times of everything stored since the last take."""
        with self._lock:
            ts, committed, self._ts, self._committed = self._ts, self._committed, [], []
        if not ts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(ts), np.concatenate(
            [np.full(len(t), c, np.int64) for t, c in zip(ts, committed, strict=True)]
        )


def wait_stored(query: StreamingQuery, probe: CommitProbe, target: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while probe.stored() < target:
        if not query.isActive:
            query.awaitTermination()  # raises the query's error
            sys.exit("the Spark job stopped")
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def publish_flat_out(settings: Settings, bus: KafkaBus, readings: int, seed: int) -> int:
    sim = Simulator(settings.sensors, stations=STATIONS, seed=seed, faults_per_station_hour=2.0)
    stop = threading.Event()
    return run_simulator(
        sim,
        bus,
        settings.readings_topic,
        clock=SystemClock(),
        rate_hz=0,
        stop=stop,
        max_ticks=readings // STATIONS,
    )


def paced_run(
    settings: Settings,
    query: StreamingQuery,
    bus: KafkaBus,
    probe: CommitProbe,
    rate: float,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Publish at `rate` readings/s for `args.seconds`; measure what the running job does."""
    rate_hz = rate / STATIONS
    sim = Simulator(
        settings.sensors,
        stations=STATIONS,
        seed=int(rate),
        faults_per_station_hour=2.0,
        tick_s=1.0 / rate_hz,
    )
    probe.take()
    before = probe.stored()
    started = time.monotonic()
    published = run_simulator(
        sim,
        bus,
        settings.readings_topic,
        clock=SystemClock(),
        rate_hz=rate_hz,
        stop=threading.Event(),
        max_ticks=round(args.seconds * rate_hz),
    )
    publish_s = time.monotonic() - started
    probe.published += published
    drained = wait_stored(query, probe, before + published, args.drain_s)
    ts, committed = probe.take()
    latency_s = (committed - ts) / 1000.0
    return {
        "published_rate": published / publish_s,
        "stored_rate": len(ts) / (time.monotonic() - started),
        "p50": float(np.percentile(latency_s, 50)) if len(ts) else float("nan"),
        "p99": float(np.percentile(latency_s, 99)) if len(ts) else float("nan"),
        "max": float(latency_s.max()) if len(ts) else float("nan"),
        "drained": float(drained),
        "stored": float(len(ts)),
        "published": float(published),
    }


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=27000.0, help="seed 003's readings/s")
    parser.add_argument(
        "--fallbacks",
        default="20000,15000,10000,7000,5000,3000,2000",
        help="lower rates tried in turn (readings/s) until one is sustainable",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="per paced run")
    parser.add_argument("--trigger-s", type=float, default=2.0)
    parser.add_argument("--capacity-readings", type=int, default=180_000)
    parser.add_argument("--drain-s", type=float, default=10.0)
    parser.add_argument("--p99-limit-s", type=float, default=5.0)
    parser.add_argument("--trees", type=int, default=1000, help="IsolationForest estimators")
    parser.add_argument("--store-url", default="")
    parser.add_argument("--partitions", type=int, default=4, help="Kafka topic partitions")
    args = parser.parse_args()
    bootstrap = os.environ.get("FAULTLINE_TEST_KAFKA")
    if not bootstrap:
        sys.exit("FAULTLINE_TEST_KAFKA not set: run under scripts/services/svc.py run kafka --")

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            data_dir=tmp,
            bus_url=f"kafka://{bootstrap}?partitions={args.partitions}",
            store_url=args.store_url or f"sqlite:///{tmp}/bench.db",
            readings_topic=f"bench-spark-{uuid.uuid4().hex[:8]}",
            model={"n_estimators": args.trees},
        )
        registry = model_registry(settings)
        ensure_model(settings, registry)
        model = registry.current()
        kernel = kernel_rate(settings, make_records(settings, STATIONS, 1000), model)
        names = " + ".join(d.name for d in build_detectors(settings, model))
        print(f"detectors: {names} ({args.trees} trees); {STATIONS} stations")
        print(f"kernel (in-process decode+detect)   {kernel:12,.0f} readings/s")

        spark = spark_session(ui_port=0, ivy_dir=REPO / ".cache" / "spark-ivy")
        probe = CommitProbe(open_store(settings.store_url))
        bus = KafkaBus.from_url(settings.bus_url)
        query = start_query(
            spark,
            settings,
            checkpoint_dir=Path(tmp) / "checkpoint",
            trigger_s=args.trigger_s,
            max_offsets_per_trigger=None,
            store=probe,
        )
        try:
            # Warm up: Python workers start and load the model on their first micro-batch.
            warm = publish_flat_out(settings, bus, STATIONS * 100, seed=1)
            probe.published += warm
            if not wait_stored(query, probe, warm, 300):
                sys.exit("the Spark job did not store the warm-up readings within 300 s")
            probe.take()
            started = time.monotonic()
            backlog = publish_flat_out(settings, bus, args.capacity_readings, seed=2)
            probe.published += backlog
            wait_stored(query, probe, warm + backlog, 600)
            capacity = backlog / (time.monotonic() - started)
            probe.take()
            print(
                f"capacity (backlog of {backlog:,}) {capacity:12,.0f} readings/s"
                f"   spark/kernel {capacity / kernel:.2f}"
            )
            print(f"\npaced runs of {args.seconds:.0f} s, trigger {args.trigger_s:g} s:")
            print("  rate/s     published/s   stored/s    p50 s   p99 s   max s   sustainable")
            rates = [args.rate, *(float(r) for r in args.fallbacks.split(",") if r)]
            for rate in rates:
                got = paced_run(settings, query, bus, probe, rate, args)
                ok = got["drained"] and got["p99"] < args.p99_limit_s
                unstored = "" if got["drained"] else f" ({got['stored']:,.0f} of "
                unstored += "" if got["drained"] else f"{got['published']:,.0f} stored in time)"
                print(
                    f"  {rate:>8,.0f}  {got['published_rate']:>11,.0f}  {got['stored_rate']:>9,.0f}"
                    f"  {got['p50']:>7.2f} {got['p99']:>7.2f} {got['max']:>7.2f}   "
                    f"{'yes' if ok else 'no'}{unstored}"
                )
                if ok:
                    break
                # Let the job catch up, so the next rate starts from an empty backlog.
                if not wait_stored(query, probe, probe.published, 900):
                    sys.exit("the Spark job did not catch up within 900 s")
        finally:
            stop_between_batches(query, 30)
            bus.close()
            probe.close()
            spark.stop()


if __name__ == "__main__":
    main()
