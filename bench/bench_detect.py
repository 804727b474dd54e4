"""Detector throughput: robust_z score+learn, and the IsolationForest detector's scoring rate.

Baselines, measured in the same run:
- robust_z: the same z-score and winsorised EWMA update written as bare numpy over prepared
  arrays (no frames, no station lookup, no warm-up bookkeeping), so the ratio shows what the
  detector's frame handling and per-station state cost on top of the arithmetic;
- isolation_forest: scikit-learn's `score_samples` on the same bare arrays, so the ratio shows
  the detector's overhead around the forest (one forest pass per batch, as in the detector).

    .venv/bin/python bench/bench_detect.py [--stations 1000] [--rounds 100] [--trees 1000]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
from bench_simulate import best_rate

from faultline.config import DEFAULT_SENSORS
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.simulate import normal_frame

SENSORS = tuple(DEFAULT_SENSORS)
MEANS = np.array([s.mean for s in DEFAULT_SENSORS.values()])
STDS = np.array([s.std for s in DEFAULT_SENSORS.values()])


def batches(stations: int, rounds: int, per_batch: int, seed: int) -> list[pd.DataFrame]:
    """`rounds` fault-free readings per station, cut into batches of `per_batch` rounds."""
    frame = normal_frame(DEFAULT_SENSORS, stations * rounds, seed=seed, stations=stations)
    step = stations * per_batch
    return [frame.iloc[i : i + step] for i in range(0, len(frame), step)]


def bare_robust(values: list[np.ndarray], stations: int, alpha: float, threshold: float) -> int:
    """The arithmetic of one score+learn round per array, on fixed-row state."""
    k = len(SENSORS)
    location = np.tile(MEANS, (stations, 1))
    scale = np.tile(STDS, (stations, 1))
    bits = 1 << np.arange(k)
    for x in values:
        floor = 1e-6 + 1e-3 * np.abs(location)
        z = np.abs(x - location) / np.maximum(scale, floor)
        over = z > threshold
        np.fmax.reduce(z, axis=1)
        over @ bits
        limit = 3.0 * np.maximum(scale, floor)
        d = np.clip(x - location, -limit, limit)
        location += alpha * d
        scale += alpha * (math.sqrt(math.pi / 2) * np.abs(d) - scale)
    return sum(len(x) for x in values)


def bench_robust(args: argparse.Namespace) -> None:
    print(f"robust_z: {args.stations} stations x {args.rounds} rounds, score+learn")
    for per_batch in (1, 5):
        frames = batches(args.stations, args.rounds, per_batch, seed=1)
        values = [f[list(SENSORS)].to_numpy() for f in frames]
        rounds = [
            v[i * args.stations : (i + 1) * args.stations]
            for v in values
            for i in range(len(v) // args.stations)
        ]

        def detector(frames: list[pd.DataFrame] = frames) -> int:
            d = RobustStreamingDetector(SENSORS)
            for frame in frames:
                d.process(frame)
            return sum(len(f) for f in frames)

        def bare(rounds: list[np.ndarray] = rounds) -> int:
            return bare_robust(rounds, args.stations, 0.02, 6.0)

        rate = best_rate(detector, args.repeats)
        base = best_rate(bare, args.repeats)
        print(
            f"  {per_batch * args.stations:>6} readings/batch: {rate:>12,.0f} readings/s"
            f"   bare numpy {base:>12,.0f}/s   ratio {rate / base:.2f}"
        )


def bench_forest(args: argparse.Namespace) -> None:
    train = normal_frame(DEFAULT_SENSORS, args.train_rows, seed=2)
    begun = time.perf_counter()
    pipeline = train_isolation_forest(
        train, SENSORS, n_estimators=args.trees, contamination=0.00125, seed=0
    )
    fit_s = time.perf_counter() - begun
    print(f"isolation_forest: {args.trees} trees, fitted on {args.train_rows} rows in {fit_s:.1f}s")
    info = ModelInfo("bench", "1", "bench-run", "champion", 0)
    detector = IsolationForestDetector(
        SENSORS, SklearnModel(pipeline, info, SENSORS, train.iloc[:2000])
    )
    for size in (25, 1000, 5000):
        frames = batches(size, max(1, 10_000 // size), 1, seed=3)
        arrays = [f[list(SENSORS)].to_numpy() for f in frames]

        def score(frames: list[pd.DataFrame] = frames) -> int:
            for frame in frames:
                detector.process(frame)
            return sum(len(f) for f in frames)

        def bare(arrays: list[np.ndarray] = arrays) -> int:
            for x in arrays:
                pipeline.score_samples(x)
            return sum(len(x) for x in arrays)

        rate = best_rate(score, args.repeats)
        base = best_rate(bare, args.repeats)
        print(
            f"  {size:>6} readings/batch: {rate:>12,.0f} readings/s"
            f"   bare score_samples {base:>10,.0f}/s   ratio {rate / base:.2f}"
            f"   ({1000 * size / rate:.1f} ms/batch)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--trees", type=int, default=1000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench_robust(args)
    bench_forest(args)


if __name__ == "__main__":
    main()
