"""Throughput of the embedded buses: publish + consume + ack, memory vs SQLite.

For each publish size (records per publish: 1, 100, 5000) publishes `--records` reading-sized
records, consumes them in batches of up to 5000 and acknowledges each batch, on:
  * memory://                       the baseline, measured in this same process;
  * sqlite (sync=normal, default)   durable across kill -9 of the process;
  * sqlite (sync=full)              durable across power loss too (an fsync per commit).
Prints records/s and the ratio to the memory bus at the same publish size, then one JSON line.

    .venv/bin/python bench/bench_bus.py [--records 20000] [--small-records 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from faultline.bus import Bus, MemoryBus, Record, SqliteBus
from faultline.clock import SystemClock
from faultline.config import DEFAULT_SENSORS
from faultline.simulate import Simulator

TOPIC = "bench.bus"
CONSUME_BATCH = 5000


def make_records(count: int) -> list[Record]:
    sim = Simulator(DEFAULT_SENSORS, stations=100, seed=1)
    ticks = -(-count // 100)
    now = SystemClock().now_ms()
    return sim.block([now + i for i in range(ticks)]).records()[:count]


def run(bus: Bus, records: list[Record], per_publish: int) -> float:
    """Records per second through publish, consume and ack, one after the other."""
    consumer = bus.consumer(TOPIC, "bench")
    started = time.perf_counter()
    for i in range(0, len(records), per_publish):
        bus.publish(TOPIC, records[i : i + per_publish], timeout_s=60)
    seen = 0
    while seen < len(records):
        batch = consumer.consume(CONSUME_BATCH, timeout_s=5)
        if not batch:
            raise RuntimeError(f"only {seen} of {len(records)} records came back")
        consumer.ack(batch)
        seen += len(batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    bus.close()
    return len(records) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="per run at sizes >= 100")
    parser.add_argument(
        "--small-records", type=int, default=2000, help="per run at one record per publish"
    )
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = 0

        def sqlite(sync: str) -> Callable[[], Bus]:
            def make() -> Bus:
                nonlocal runs
                runs += 1
                return SqliteBus(Path(tmp) / f"bus-{runs}.db", sync=sync)

            return make

        buses: dict[str, Callable[[], Bus]] = {
            "memory": lambda: MemoryBus(max_messages=10**7, max_bytes=2**40),
            "sqlite": sqlite("normal"),
            "sqlite_full": sqlite("full"),
        }
        for per_publish in (1, 100, 5000):
            records = make_records(args.small_records if per_publish == 1 else args.records)
            print(f"\n[{per_publish} record(s) per publish, {len(records):,} records]")
            baseline = 0.0
            for name, make in buses.items():
                rate = run(make(), records, per_publish)
                baseline = baseline or rate
                results.setdefault(name, {})[f"batch_{per_publish}"] = round(rate)
                results[name][f"batch_{per_publish}_vs_memory"] = round(rate / baseline, 4)
                print(f"  {name:12} {rate:12,.0f} records/s   {rate / baseline:8.3f} x memory")
    print(json.dumps({"bench": "bus", **results}))


if __name__ == "__main__":
    main()
