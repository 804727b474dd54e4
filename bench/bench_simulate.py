"""Simulator throughput: readings/s as frames and as encoded bus records.

The baseline, measured in the same run, is drawing the same number of normal variates with numpy
alone: no simulator can be faster than its random numbers, so the ratio shows what the
mean-reverting walk, the faults and the encoding cost on top.

    .venv/bin/python bench/bench_simulate.py [--stations 1000] [--ticks 300]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from faultline.config import DEFAULT_SENSORS
from faultline.simulate import DEFAULT_START_MS, Simulator


def best_rate(readings: Callable[[], int], repeats: int) -> float:
    """The best of `repeats` runs, in readings per second."""
    best = 0.0
    for _ in range(repeats):
        begun = time.perf_counter()
        count = readings()
        best = max(best, count / (time.perf_counter() - begun))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--block-ticks", type=int, default=100)
    parser.add_argument("--faults-per-station-hour", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_sensors = len(DEFAULT_SENSORS)
    times = DEFAULT_START_MS + 1000 * np.arange(args.ticks, dtype=np.int64)

    def simulator(stations: int) -> Simulator:
        return Simulator(
            DEFAULT_SENSORS,
            stations=stations,
            seed=0,
            faults_per_station_hour=args.faults_per_station_hour,
        )

    def baseline() -> int:
        rng = np.random.default_rng(0)
        for begin in range(0, args.ticks, args.block_ticks):
            ticks = len(times[begin : begin + args.block_ticks])
            rng.standard_normal((ticks, args.stations, n_sensors))
        return args.ticks * args.stations

    def blocks(output: Callable[..., object], stations: int, block_ticks: int) -> int:
        sim = simulator(stations)
        count = 0
        for begin in range(0, args.ticks, block_ticks):
            block = sim.block(times[begin : begin + block_ticks])
            output(block)
            count += len(block)
        return count

    def frames() -> int:
        return blocks(lambda b: b.frame(), args.stations, args.block_ticks)

    def records() -> int:
        return blocks(lambda b: b.records(), args.stations, args.block_ticks)

    def live_ticks() -> int:  # seed 000's 25 stations, one tick per call, as `faultline up` runs
        return blocks(lambda b: b.records(), 25, 1)

    print(
        f"simulator: {args.stations} stations x {args.ticks} ticks x {n_sensors} sensors, "
        f"blocks of {args.block_ticks} ticks, {args.faults_per_station_hour:g} faults/station-hour"
    )
    base = best_rate(baseline, args.repeats)
    print(f"  baseline numpy normals      {base:>14,.0f} readings/s")
    for name, run in (
        ("frames", frames),
        ("encoded records", records),
        ("records, 25 stations/tick", live_ticks),
    ):
        rate = best_rate(run, args.repeats)
        slower = base / rate
        print(f"  {name:<27} {rate:>14,.0f} readings/s   ({slower:,.0f}x slower than baseline)")


if __name__ == "__main__":
    main()
