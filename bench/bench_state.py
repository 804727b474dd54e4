"""Checkpoint cost of the default detector (`surprise`): dump and load of the pipeline's state.

For 1,000 and 10,000 stations that have learned a few hundred readings each, it times
`DetectorPipeline.dump` / `load` (the engine's checkpoint form: binary arrays in msgpack) and,
for comparison, the JSON snapshot (`snapshot` / `restore` through json, compressed with zlib at
level 6 as first planned for checkpoints). The baseline, measured in the same run,
is one detection step of a live batch of the same stations (one reading each), so each ratio
says how many detection steps a checkpoint costs.

    PYTHONPATH=src .venv/bin/python bench/bench_state.py [--stations 1000 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Callable

from faultline.config import DEFAULT_SENSORS
from faultline.detect import DetectorPipeline
from faultline.detect.surprise import SurpriseDetector
from faultline.simulate import normal_frame

SENSORS = tuple(DEFAULT_SENSORS)


def best_s(work: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        begun = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - begun)
    return best


def pipeline() -> DetectorPipeline:
    return DetectorPipeline([SurpriseDetector(SENSORS, warmup=30)])


def measure(stations: int, rounds: int, repeats: int) -> dict[str, float]:
    frame = normal_frame(DEFAULT_SENSORS, stations * (rounds + repeats), seed=1, stations=stations)
    trained = pipeline()
    trained.run(frame.iloc[: stations * rounds])
    live = [
        frame.iloc[stations * (rounds + i) : stations * (rounds + i + 1)] for i in range(repeats)
    ]
    steps = iter(live)
    step_s = best_s(lambda: trained.run(next(steps)), repeats)

    dump = trained.dump()
    zlib_s = best_s(lambda: zlib.compress(dump, 1), repeats)
    dump_s = best_s(trained.dump, repeats)
    load_s = best_s(lambda: pipeline().load(dump), repeats)
    text = zlib.compress(json.dumps(trained.snapshot()).encode(), 6)
    json_dump_s = best_s(lambda: zlib.compress(json.dumps(trained.snapshot()).encode(), 6), 1)
    json_load_s = best_s(lambda: pipeline().restore(json.loads(zlib.decompress(text))), 1)
    return {
        "stations": stations,
        "step_ms": 1000 * step_s,
        "dump_ms": 1000 * dump_s,
        "load_ms": 1000 * load_s,
        "dump_bytes_per_station": len(dump) / stations,
        "json_dump_ms": 1000 * json_dump_s,
        "json_load_ms": 1000 * json_load_s,
        "zlib1_dump_ms": 1000 * zlib_s,
        "zlib1_bytes_per_station": len(zlib.compress(dump, 1)) / stations,
        "dump_vs_step": dump_s / step_s,
        "load_vs_step": load_s / step_s,
        "json_dump_vs_step": json_dump_s / step_s,
        "dump_speedup_vs_json": json_dump_s / dump_s,
        "load_speedup_vs_json": json_load_s / load_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = []
    for stations in args.stations:
        r = measure(stations, args.rounds, args.repeats)
        results.append(r)
        print(
            f"{stations:>6} stations: step {r['step_ms']:.1f} ms | dump {r['dump_ms']:.1f} ms"
            f" ({r['dump_vs_step']:.2f} steps, {r['dump_bytes_per_station']:.0f} B/station)"
            f" load {r['load_ms']:.1f} ms ({r['load_vs_step']:.2f} steps) | JSON snapshot"
            f" {r['json_dump_ms']:.0f} ms ({r['json_dump_vs_step']:.1f} steps), restore"
            f" {r['json_load_ms']:.0f} ms | zlib -1 of the dump would add"
            f" {r['zlib1_dump_ms']:.0f} ms for {r['zlib1_bytes_per_station']:.0f} B/station"
            f" | dump {r['dump_speedup_vs_json']:.0f}x,"
            f" load {r['load_speedup_vs_json']:.0f}x faster than JSON"
        )
    print(json.dumps({"bench": "state", "results": results}))


if __name__ == "__main__":
    main()
