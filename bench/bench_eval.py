"""Detection quality on NAB for every evaluable detector, and the default detector's throughput.

Prints, per detector, NAB's three normalised profile scores (the table in docs/EVALUATION.md)
and how fast the replay ran, then the readings/s of the production-default candidate scoring a
live-like stream (one reading per station per round, 3 sensors) in engine-sized batches.

    .venv/bin/python bench/bench_eval.py [--data ../shared/nab] [--forest] [--stations 1000]

`--forest` adds seed 000's Isolation Forest (one 1000-tree model per series: about 3 minutes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from bench_simulate import best_rate

from faultline.config import DEFAULT_SENSORS
from faultline.detect.surprise import SurpriseDetector
from faultline.evaluate.benchmark import run_nab
from faultline.evaluate.detectors import DEFAULT_DETECTOR, EVAL_DETECTORS
from faultline.evaluate.nab import PROFILES, default_root, load_corpus
from faultline.simulate import normal_frame

SENSORS = tuple(DEFAULT_SENSORS)


def bench_nab(data: Path, forest: bool) -> None:
    corpus = load_corpus(data)
    print(f"NAB ({len(corpus.files)} series, {corpus.windows} windows) from {data}")
    print(f"  {'detector':<22}" + "".join(f"{p:>20}" for p in PROFILES) + f"{'readings/s':>14}")
    for spec in EVAL_DETECTORS.values():
        if spec.needs_training and not forest:
            continue
        run = run_nab(corpus, spec)
        scores = "".join(f"{run.results[p].score:>20.2f}" for p in PROFILES)
        print(f"  {spec.name:<22}{scores}{run.readings / run.seconds:>14,.0f}", flush=True)
    print("  published best: ARTime 74.9 / 65.1 / 80.4")


def bench_throughput(stations: int, rounds: int, repeats: int) -> None:
    frame = normal_frame(DEFAULT_SENSORS, stations * rounds, seed=1, stations=stations)
    print(f"{DEFAULT_DETECTOR} throughput: {stations} stations x {rounds} rounds, 3 sensors")
    for per_batch in (1, 5):
        step = stations * per_batch
        frames = [frame.iloc[i : i + step] for i in range(0, len(frame), step)]

        def run(frames: list[pd.DataFrame] = frames) -> int:
            detector = SurpriseDetector(SENSORS)
            for f in frames:
                detector.process(f)
            return sum(len(f) for f in frames)

        rate = best_rate(run, repeats)
        print(f"  {step:>6} readings/batch: {rate:>12,.0f} readings/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_root())
    parser.add_argument("--forest", action="store_true", help="include the Isolation Forest")
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.data is None:
        print("NAB corpus not found (pass --data or set FAULTLINE_SHARED): skipping NAB")
    else:
        bench_nab(args.data, args.forest)
    bench_throughput(args.stations, args.rounds, args.repeats)


if __name__ == "__main__":
    main()
