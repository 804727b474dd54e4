"""A store outage under HTTP ingest: PostgreSQL stopped, or the disk full, for 30 s; is anything
acknowledged lost, and does Faultline recover without a restart?

    .venv/bin/python bench/bench_outage.py [--fault both|postgres|disk] [--outage-s 30]
        [--rate 5000] [--disk-mb 512]

postgres: a PostgreSQL of this benchmark's own (scripts/services/svc.py with its own state dir
and a port offset, so the shared server is never touched) is Faultline's store; it is stopped
for the outage and started again. disk: Faultline's data dir (SQLite store, and the bus's file
when the bus is durable) lives on a small tmpfs, filled to the last byte for the outage and
emptied again (that needs root; without, it is skipped and says so). Meanwhile a paced client
posts batches with unique keys, resending what failed, and the answers and /api/health are
recorded per phase. After the outage the same `faultline up` process (same pid) must be
healthy and storing again; then the load stops, the engine drains and the store is read
directly to count acknowledged readings lost, rows duplicated and station counters beyond
their rows.

Prints the figures, the acknowledged rate during the outage and after it against the baseline
phase's (same process), and one JSON line last with each fault's figures. Exit 1 when anything
acknowledged was lost or duplicated, or Faultline did not recover.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from tests.faults.durability import (
    SMALL_MODEL,
    Faultline,
    Load,
    PrivatePostgres,
    SmallDisk,
    StoredRows,
    drain,
    postgres_rows,
    rate_between,
    sqlite_rows,
    summary_line,
    tally,
)


class HealthWatch:
    """Polls /api/health once a second and counts the answers and failing components."""

    def __init__(self, app: Faultline) -> None:
        self.app = app
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HealthWatch:
        self._thread.start()
        return self

    def take(self) -> Counter[str]:
        seen, self.seen = self.seen, Counter()
        return seen

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                status, body = self.app.health()
                failing = [
                    name
                    for name, c in dict(body.get("components", {})).items()  # type: ignore[call-overload]
                    if c.get("status") != "ok"
                ]
                self.seen[f"{status} {','.join(failing)}".strip()] += 1
            except httpx.HTTPError as exc:
                self.seen[type(exc).__name__] += 1


def wait_until(check: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until `check` held, or None after `timeout_s`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if check():
            return time.monotonic() - began
        time.sleep(0.25)
    return None


def seconds(took: float | None) -> str:
    return "never" if took is None else f"{took:.1f} s"


def healthy(app: Faultline) -> bool:
    try:
        return app.health()[0] == 200
    except httpx.HTTPError:
        return False


def run(fault: str, args: argparse.Namespace) -> dict[str, object] | None:
    """One outage of `fault` under load; its figures, or None when it cannot run here."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-outage-{fault}-"))
    disk: SmallDisk | None = None
    pg: PrivatePostgres | None = None
    if fault == "postgres":
        pg = PrivatePostgres(root / "services", args.port_offset)
        pg.start()
        store_url = pg.schema_url("bench_outage")
        app = Faultline(root / "data", store_url=store_url, env=SMALL_MODEL)
        read: Callable[[], StoredRows] = lambda: postgres_rows(store_url)  # noqa: E731
        begin_fault, end_fault = pg.stop, pg.start
    else:
        problem = SmallDisk.mount_error()
        if problem:
            print(f"disk: cannot run: {problem}")
            return None
        disk = SmallDisk(root / "disk", args.disk_mb)
        disk.mount()
        app = Faultline(disk.path / "data", env=SMALL_MODEL, log_path=root / "faultline.log")
        read = lambda: sqlite_rows(disk.path / "data" / "faultline.db")  # noqa: E731
        begin_fault = lambda: print(f"  filled {disk.fill() / 2**20:.0f} MiB")  # noqa: E731
        end_fault = disk.free
    try:
        app.start()
        pid = app.pid
        print(f"== {fault}: faultline up (pid {pid}) at {app.url}, log {app.log_path}")
        watch = HealthWatch(app).start()
        load = Load(app.url, app.token, rate=args.rate, batch=args.batch).start()
        t0, answers0 = load.snapshot(), load.answers()
        time.sleep(args.baseline_s)
        t1, answers1 = load.snapshot(), load.answers()
        watch.take()
        print(f"fault: {fault} for {args.outage_s:.0f} s")
        begin_fault()
        time.sleep(args.outage_s)
        t2, answers2 = load.snapshot(), load.answers()
        health_outage = watch.take()
        end_fault()
        stored_at_end = len(set(read().rows))
        healthy_after = wait_until(lambda: healthy(app), 120)
        storing_after = wait_until(lambda: len(set(read().rows)) > stored_at_end, 120)
        t3 = load.snapshot()
        time.sleep(args.after_s)
        t4 = load.snapshot()
        health_after = watch.take()
        load.stop()
        watch.stop()
        acked = load.acked_keys()
        stored = drain(acked, read, timeout_s=300)
        count = tally(acked, stored)
        same_process = app.proc is not None and app.proc.poll() is None and app.pid == pid
    finally:
        app.stop()
        if pg is not None:
            pg.stop()
        if disk is not None:
            disk.unmount()

    base_rate = rate_between(t0, t1)
    outage_rate = rate_between(t1, t2)
    after_rate = rate_between(t3, t4)
    recovered = same_process and healthy_after is not None and storing_after is not None
    print(f"offered {args.rate:.0f} readings/s in batches of {args.batch}")
    print(f"answers before the outage: {dict(answers1 - answers0)}")
    print(f"answers during the outage: {dict(answers2 - answers1)}")
    print(f"health during the outage: {dict(health_outage)}")
    print(f"health after: {dict(health_after)}")
    print(f"acknowledged readings/s: baseline {base_rate:.0f}, outage {outage_rate:.0f}, ", end="")
    print(f"after {after_rate:.0f}")
    print(f"  ratio outage/baseline {outage_rate / max(base_rate, 1e-9):.2f}, ", end="")
    print(f"after/baseline {after_rate / max(base_rate, 1e-9):.2f}")
    print(f"after the fault ended: healthy in {seconds(healthy_after)}, ", end="")
    print(f"storing in {seconds(storing_after)}; same process (no restart): {same_process}")
    for name, value in count.as_dict().items():
        print(f"  {name:15} {value}")
    return {
        "outage_s": args.outage_s,
        "acked_rate_baseline": round(base_rate, 1),
        "acked_rate_outage": round(outage_rate, 1),
        "acked_rate_after": round(after_rate, 1),
        "ratio_outage_vs_baseline": round(outage_rate / max(base_rate, 1e-9), 3),
        "ratio_after_vs_baseline": round(after_rate / max(base_rate, 1e-9), 3),
        "healthy_after_s": None if healthy_after is None else round(healthy_after, 1),
        "storing_after_s": None if storing_after is None else round(storing_after, 1),
        "recovered_without_restart": recovered,
        **count.as_dict(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=("postgres", "disk", "both"), default="both")
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="readings/s offered")
    parser.add_argument("--batch", type=int, default=100, help="readings per request")
    parser.add_argument("--baseline-s", type=float, default=20.0, help="load before the fault")
    parser.add_argument("--after-s", type=float, default=20.0, help="load after the fault")
    parser.add_argument("--disk-mb", type=int, default=512, help="disk: the tmpfs's size")
    parser.add_argument("--port-offset", type=int, default=500, help="postgres: svc.py offset")
    args = parser.parse_args()

    faults = ("postgres", "disk") if args.fault == "both" else (args.fault,)
    figures = {fault: run(fault, args) for fault in faults}
    print(summary_line({"bench": "outage", "rate_offered": args.rate, **figures}))
    failed = [
        fault
        for fault, f in figures.items()
        if f is not None
        and (f["lost"] or f["duplicated"] or f["overcounted"] or not f["recovered_without_restart"])
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
