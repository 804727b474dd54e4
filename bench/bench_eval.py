"""Detection quality on NAB for every evaluable detector, and the default detector's throughput.

Prints, per detector, NAB's three normalised profile scores (the table in docs/EVALUATION.md)
and how fast the replay ran; the default detector's scores with each file's best threshold (how
much calibration across files could still buy); then the default detector's readings/s on one
core as `faultline eval simulate` runs it (the simulator's stream with all fault kinds, tick by
tick, stations interleaved, through `Detector.process` in engine-sized batches), beside robust_z
(the engine's previous streaming detector) on the same frames in the same process, and the
ratio.

    .venv/bin/python bench/bench_eval.py [--data ../shared/nab] [--forest] [--stations 50,1000]

`--forest` adds seed 000's Isolation Forest (one 1000-tree model per series: about 3 minutes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from bench_simulate import best_rate

from faultline.config import DEFAULT_SENSORS
from faultline.evaluate.benchmark import run_nab
from faultline.evaluate.detectors import EVAL_DETECTORS, eval_detector
from faultline.evaluate.nab import PROFILES, default_root, load_corpus, per_file_bound
from faultline.evaluate.replay import CHUNK_ROWS
from faultline.simulate import simulate_frame

BASELINE = "robust_z"
# The deployed set's streaming detector: its scores are the set's, and the forest beside it
# (fitted per file, minutes on NAB) adds no verdict (docs/decisions/0020).
DEFAULT_DETECTOR = "surprise"

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
    default = run_nab(corpus, eval_detector(DEFAULT_DETECTOR))
    bounds = " / ".join(
        f"{per_file_bound(corpus.files, default.anomaly_scores, corpus.profiles[p]):.1f}"
        for p in PROFILES
    )
    print(f"  {DEFAULT_DETECTOR} with each file's best threshold (needs the labels): {bounds}")


def bench_simulate(stations: int, ticks: int, repeats: int) -> None:
    frame, _ = simulate_frame(
        DEFAULT_SENSORS, ticks, stations=stations, seed=0, faults_per_station_hour=2.0
    )
    batches = [frame.iloc[i : i + CHUNK_ROWS] for i in range(0, len(frame), CHUNK_ROWS)]
    rates = {}
    for name in (DEFAULT_DETECTOR, BASELINE):
        spec = eval_detector(name)

        def run(spec_build=spec.build, batches: list[pd.DataFrame] = batches) -> int:
            detector = spec_build(SENSORS, frame.iloc[:0])
            for batch in batches:
                detector.process(batch)
            return len(frame)

        rates[name] = best_rate(run, repeats)
    print(
        f"  {stations:>5} stations x {ticks} ticks: {DEFAULT_DETECTOR} "
        f"{rates[DEFAULT_DETECTOR]:>10,.0f} readings/s, {BASELINE} {rates[BASELINE]:>10,.0f} "
        f"readings/s, ratio {rates[DEFAULT_DETECTOR] / rates[BASELINE]:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_root())
    parser.add_argument("--forest", action="store_true", help="include the Isolation Forest")
    parser.add_argument(
        "--stations", default="50,1000", help="comma-separated station counts (default 50,1000)"
    )
    parser.add_argument("--readings", type=int, default=300_000, help="per station count")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.data is None:
        print("NAB corpus not found (pass --data or set FAULTLINE_SHARED): skipping NAB")
    else:
        bench_nab(args.data, args.forest)
    print(f"eval simulate stream, one core, best of {args.repeats}:")
    for stations in (int(n) for n in args.stations.split(",")):
        bench_simulate(stations, max(1, args.readings // stations), args.repeats)


if __name__ == "__main__":
    main()
