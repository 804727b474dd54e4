"""Compiled against scikit-learn scoring of seed 000's champion, in one run.

Registers the champion the way `faultline up` does (runtime.ensure_model over a registry in a
temporary data directory, from the default Settings: 1000 trees), so it carries its checked
compiled form, and builds the same model without it as the baseline. Prints:
  * the champion alone: seconds per `anomaly_score` call at batch sizes 5, 500 and 5000, and
    the ratio scikit-learn / compiled (targets: >= 20x at 5, >= 2x at 5000);
  * the default detector set (detect.factory.build_detectors from the same Settings): decode +
    score rate in the engine's full batches (settings.engine.batch_max_records), and the CPU
    share that decode + score costs at 25 stations x 1 Hz in 0.2 s micro-batches (5 readings),
    before (scikit-learn) and after (compiled);
  * one JSON line last.

    .venv/bin/python bench/bench_models.py [--stations 1000] [--ticks 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faultline.clock import SystemClock
from faultline.codec import RawMessage, ReadingDecoder
from faultline.config import Settings, load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.models.isolation_forest import SklearnModel
from faultline.runtime import ensure_model, model_registry
from faultline.simulate import Simulator, normal_frame

BATCHES = (5, 500, 5000)


def seconds_per_call(call: Callable[[], object], budget_s: float, repeats: int) -> float:
    """Median over `repeats` rounds of the mean time of a call, each round about `budget_s`."""
    call()  # warm: numba's cache load, scikit-learn's first-call imports
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        calls = 0
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= budget_s:
                break
        rounds.append(elapsed / calls)
    return statistics.median(rounds)


def messages(settings: Settings, stations: int, ticks: int) -> list[RawMessage]:
    sim = Simulator(settings.sensors, stations=stations, seed=1, faults_per_station_hour=2.0)
    now = SystemClock().now_ms()
    ts = now - 1000 * ticks + np.arange(ticks, dtype=np.int64) * 1000
    records = sim.block(ts).records()
    return [RawMessage(r.value, f"b/0/{i}", now, i) for i, r in enumerate(records)]


def decode_score(
    settings: Settings, model: SklearnModel, raws: list[RawMessage], size: int
) -> Callable[[], None]:
    decoder = ReadingDecoder(settings.sensors, settings.ingest)
    pipeline = DetectorPipeline(build_detectors(settings, model))

    def run() -> None:
        for lo in range(0, len(raws), size):
            pipeline.run(decoder.decode(raws[lo : lo + size]).readings)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        registry = model_registry(settings)
        started = time.perf_counter()
        ensure_model(settings, registry)  # trains, compiles, checks and registers
        register_s = time.perf_counter() - started
        compiled = registry.current()
    assert compiled.scorer == "compiled", "the champion was registered without a compiled form"
    baseline = SklearnModel(compiled.pipeline, compiled.info, compiled.sensors, compiled.reference)
    print(
        f"champion: {settings.model.n_estimators} trees, trained + compiled + checked + "
        f"registered in {register_s:.1f} s"
    )

    rows = normal_frame(settings.sensors, max(BATCHES), seed=7)[list(compiled.sensors)]
    x = rows.to_numpy() * np.random.default_rng(8).uniform(0.9, 1.1, (len(rows), 1))
    figures: dict[str, float] = {}
    print(f"{'batch':>6} {'scikit-learn':>14} {'compiled':>12} {'ratio':>8}")
    for n in BATCHES:
        batch = x[:n]
        assert np.array_equal(compiled.anomaly_score(batch), baseline.anomaly_score(batch))
        budget = 0.5 if n < 5000 else 1.5
        sk = seconds_per_call(lambda b=batch: baseline.anomaly_score(b), budget, args.repeats)
        co = seconds_per_call(lambda b=batch: compiled.anomaly_score(b), budget, args.repeats)
        figures[f"score_ratio_{n}"] = sk / co
        figures[f"sklearn_ms_{n}"] = sk * 1e3
        figures[f"compiled_ms_{n}"] = co * 1e3
        print(f"{n:>6} {sk * 1e3:>11.3f} ms {co * 1e3:>9.3f} ms {sk / co:>7.1f}x")

    raws = messages(settings, args.stations, args.ticks)
    full = settings.engine.batch_max_records
    small = messages(settings, 25, 40)  # 25 stations x 40 s, in 0.2 s micro-batches of 5
    per_second = 25 / 5  # micro-batches a second at 25 stations x 1 Hz
    print(f"default detectors ({', '.join(d.name for d in build_detectors(settings, compiled))})")
    for label, model in (("sklearn", baseline), ("compiled", compiled)):
        t = seconds_per_call(decode_score(settings, model, raws, full), 1.0, args.repeats)
        rate = len(raws) / t
        t_small = seconds_per_call(decode_score(settings, model, small, 5), 1.0, args.repeats)
        share = t_small / (len(small) / 5) * per_second
        figures[f"decode_score_per_s_{label}"] = rate
        figures[f"cpu_share_25x1hz_{label}"] = share
        print(
            f"  {label:>8}: {rate:>10,.0f} readings/s in batches of {full}; "
            f"{share:.1%} of a core at 25 stations x 1 Hz"
        )
    figures["decode_score_ratio"] = (
        figures["decode_score_per_s_compiled"] / figures["decode_score_per_s_sklearn"]
    )
    figures["cpu_share_ratio_25x1hz"] = (
        figures["cpu_share_25x1hz_sklearn"] / figures["cpu_share_25x1hz_compiled"]
    )
    print(
        f"decode + score {figures['decode_score_ratio']:.1f}x faster; "
        f"{figures['cpu_share_ratio_25x1hz']:.1f}x less CPU at 25 stations x 1 Hz"
    )
    print(json.dumps({"bench": "models", **{k: round(v, 4) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
