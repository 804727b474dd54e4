"""A long run of `faultline up` under HTTP ingest: does its memory stay flat?

A paced client posts batches to POST /api/readings at `--rate` readings/s for `--minutes`;
the RSS of the `faultline up` process is sampled every `--sample-s`. The figure is the growth
of RSS from the end of the warm-up (`--warmup-minutes`, 10 by default: detector state, caches
and the store's pages settle) to the end, and its peak after the warm-up, both against the RSS
at the end of the warm-up (the baseline, same run). Also printed: the readings acknowledged
and stored per second against the offered rate, since a memory figure at a rate the engine did
not keep up with would mean little (a backlog held in memory grows by itself).

    .venv/bin/python bench/bench_soak.py --minutes 60 [--rate 10000] [--warmup-minutes 10]
    .venv/bin/python bench/bench_soak.py --minutes 3 --warmup-minutes 1   # a short check

One JSON line last. Exit 1 when RSS grew more than `--max-growth` (10 %) after the warm-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from tests.faults.durability import SMALL_MODEL, Faultline, Load, rss_mb, summary_line


def stored_readings(app: Faultline) -> int:
    """Readings the store holds, from its station counters (counting rows would take long)."""
    return int(httpx.get(f"{app.url}/api/stats", timeout=30).json()["readings"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup-minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10000.0, help="readings/s offered")
    parser.add_argument("--batch", type=int, default=200, help="readings per request")
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument(
        "--small-model", action="store_true", help="a 50-tree forest instead of the default"
    )
    args = parser.parse_args()
    if args.warmup_minutes >= args.minutes:
        parser.error("--warmup-minutes must be shorter than --minutes")

    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    app = Faultline(root / "data", env=SMALL_MODEL if args.small_model else {})
    app.start()
    print(f"faultline up (pid {app.pid}) at {app.url}, log {app.log_path}")
    load = Load(
        app.url, app.token, rate=args.rate, batch=args.batch, stations=args.stations, remember=False
    )
    load.start()
    began = time.monotonic()
    warm_end = began + 60 * args.warmup_minutes
    end = began + 60 * args.minutes
    samples: list[tuple[float, float]] = []
    baseline_rss: float | None = None
    warm_snapshot = load.snapshot()
    warm_stored = 0
    while True:
        now = time.monotonic()
        samples.append((now - began, rss_mb(app.pid)))
        if baseline_rss is None and now >= warm_end:
            baseline_rss = samples[-1][1]
            warm_snapshot = load.snapshot()
            warm_stored = stored_readings(app)
            print(f"warm-up over after {(now - began) / 60:.1f} min: RSS {baseline_rss:.0f} MB")
        if now >= end:
            break
        if len(samples) % max(1, int(60 / args.sample_s)) == 0:
            print(f"  {(now - began) / 60:5.1f} min  RSS {samples[-1][1]:7.1f} MB")
        time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
    final = load.snapshot()
    final_stored = stored_readings(app)
    load.stop()
    answers = load.answers()
    app.stop()

    assert baseline_rss is not None
    after = [rss for t, rss in samples if t >= 60 * args.warmup_minutes]
    growth = after[-1] / baseline_rss - 1
    peak_growth = max(after) / baseline_rss - 1
    span = max(final[0] - warm_snapshot[0], 1e-9)
    offered = (final[2] - warm_snapshot[2]) / span
    acked = (final[1] - warm_snapshot[1]) / span
    stored = (final_stored - warm_stored) / span
    print(f"ran {args.minutes:.1f} min at {args.rate:.0f} readings/s offered, ", end="")
    print(f"batches of {args.batch}, {args.stations} stations")
    print(f"answers: {dict(sorted(answers.items()))}")
    print(f"after the warm-up: offered {offered:.0f}/s, acknowledged {acked:.0f}/s ", end="")
    print(f"({acked / max(offered, 1e-9):.2f} of offered), stored {stored:.0f}/s ", end="")
    print(f"({stored / max(acked, 1e-9):.2f} of acknowledged)")
    print(f"RSS: {samples[0][1]:.0f} MB at start, {baseline_rss:.0f} MB after warm-up, ", end="")
    print(f"{after[-1]:.0f} MB at the end (growth {growth:+.1%}, peak {peak_growth:+.1%})")
    print(
        summary_line(
            {
                "bench": "soak",
                "minutes": args.minutes,
                "warmup_minutes": args.warmup_minutes,
                "rate_offered": args.rate,
                "acked_per_s": round(acked, 1),
                "stored_per_s": round(stored, 1),
                "ratio_acked_vs_offered": round(acked / max(offered, 1e-9), 3),
                "ratio_stored_vs_acked": round(stored / max(acked, 1e-9), 3),
                "rss_start_mb": round(samples[0][1], 1),
                "rss_after_warmup_mb": round(baseline_rss, 1),
                "rss_end_mb": round(after[-1], 1),
                "rss_growth": round(growth, 4),
                "rss_peak_growth": round(peak_growth, 4),
            }
        )
    )
    return 1 if growth > args.max_growth else 0


if __name__ == "__main__":
    sys.exit(main())
