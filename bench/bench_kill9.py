"""`kill -9` of `faultline up` under HTTP ingest: is anything acknowledged lost or stored twice?

A paced client posts batches to POST /api/readings (default 50 requests/s of 100 readings, each
with a unique key station_id, ts, seq) and remembers every batch answered 2xx; a batch that
failed is sent again with the same keys. After a baseline phase without faults, `faultline up
--no-simulator` is killed with SIGKILL at a random moment, `--kills` times, and restarted on the
same data dir each time. At the end the load stops, the engine drains, and the SQLite file is
read directly: acknowledged keys missing (lost), rows beyond the first of a key (duplicated),
station counters beyond the rows (a replay counted twice), and our readings dead-lettered.

    .venv/bin/python bench/bench_kill9.py [--kills 10] [--rate 5000] [--batch 100]

Prints the figures, the acknowledged rate while killing against the baseline phase's (same
process), and one JSON line last. Exit 1 when anything acknowledged was lost or duplicated.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.durability import (
    SMALL_MODEL,
    Faultline,
    Load,
    drain,
    rate_between,
    sqlite_rows,
    summary_line,
    tally,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5000.0, help="readings/s offered")
    parser.add_argument("--batch", type=int, default=100, help="readings per request")
    parser.add_argument("--baseline-s", type=float, default=20.0, help="load without faults")
    parser.add_argument("--up-min-s", type=float, default=2.0, help="least time between kills")
    parser.add_argument("--up-max-s", type=float, default=8.0, help="most time between kills")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary directory")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-kill9-"))
    app = Faultline(root / "data", env=SMALL_MODEL)
    first_start = app.start()
    print(f"faultline up serving at {app.url} after {first_start:.1f} s (log {app.log_path})")
    load = Load(app.url, app.token, rate=args.rate, batch=args.batch).start()
    began = load.snapshot()
    time.sleep(args.baseline_s)
    baseline = load.snapshot()
    restarts: list[float] = []
    for i in range(args.kills):
        up = rng.uniform(args.up_min_s, args.up_max_s)
        time.sleep(up)
        app.kill()
        took = app.start()
        restarts.append(took)
        print(f"kill {i + 1}/{args.kills} after {up:.1f} s up; serving again in {took:.1f} s")
    faulted = load.snapshot()
    load.stop()
    acked = load.acked_keys()
    stored = drain(acked, lambda: sqlite_rows(root / "data" / "faultline.db"), timeout_s=300)
    count = tally(acked, stored)
    app.stop()

    base_rate = rate_between(began, baseline)
    fault_rate = rate_between(baseline, faulted)
    print(f"offered {args.rate:.0f} readings/s in batches of {args.batch}")
    print(f"acknowledged {base_rate:.0f} readings/s without faults, {fault_rate:.0f} while killing")
    print(f"  ratio killing/baseline: {fault_rate / max(base_rate, 1e-9):.2f}")
    print(f"answers: {dict(sorted(load.outcomes.items()))}")
    print(f"restart to serving: mean {sum(restarts) / max(len(restarts), 1):.1f} s")
    for name, value in count.as_dict().items():
        print(f"  {name:15} {value}")
    if count.lost:
        print(f"LOST {count.lost} acknowledged readings of {count.acked}")
    print(
        summary_line(
            {
                "bench": "kill9",
                "kills": args.kills,
                "rate_offered": args.rate,
                "acked_rate_baseline": round(base_rate, 1),
                "acked_rate_killing": round(fault_rate, 1),
                "ratio_killing_vs_baseline": round(fault_rate / max(base_rate, 1e-9), 3),
                **count.as_dict(),
            }
        )
    )
    return 1 if count.lost or count.duplicated or count.overcounted else 0


if __name__ == "__main__":
    sys.exit(main())
