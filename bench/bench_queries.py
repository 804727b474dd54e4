"""The API's read queries with many readings stored, under 20 concurrent clients.

Generates `--readings` stored readings (100 million for the issue's figure) of `--stations`
stations, each reporting every `--interval-s` up to now, one in `--anomaly-every` anomalous, into
each backend (SQLite; PostgreSQL when FAULTLINE_TEST_POSTGRES is set, in a schema of its own,
dropped afterwards) through the store's own write, in batches of `--batch` as the engine writes
them, so every index and summary is the one a deployment has. Then it serves the real API app
(uvicorn, in a process of its own, over that store) and measures, for each query, `--clients`
clients each sending `--requests` requests one after the other (p50 and p99 of their
latencies), against the baseline of one client alone in the same run (the ratio is what
concurrency costs):

  * GET /api/latest_anomalies (10, the default);
  * GET /api/outliers_count?time_range=30d;
  * GET /api/stations (every station, with its latest reading);
  * GET /api/stations/{id}/readings: one page (1000, the default) of a random station from a
    random instant of its history.

The store's query alone, in this process, is printed beside each (best of a few), so what the
API adds shows too. Prints a table and, last, one JSON line.

The server is the one `faultline serve` runs (api/server.py's ApiServer). Until ApiServer
marked its socket TCP, its connections answered with Nagle's algorithm on and every response
waited about 40 ms for the client's delayed acknowledgement (docs/PERFORMANCE.md).

    PYTHONPATH=src .venv/bin/python bench/bench_queries.py [--readings 100000000]
        [--stations 1000] [--interval-s 1] [--backends sqlite postgres] [--clients 20]
        [--requests 50] [--data-dir DIR]

`--data-dir` keeps the SQLite file there (it is large: about 250 bytes a reading); without it a
temporary directory is used and removed. `--serve URL` is the server process's own mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
import psycopg

from faultline.api.app import create_app
from faultline.api.context import AppContext
from faultline.api.server import ApiServer
from faultline.bus import MemoryBus
from faultline.clock import SystemClock
from faultline.config import load_settings
from faultline.metrics import Metrics
from faultline.schema import (
    IS_ANOMALY,
    MODEL_VERSION,
    RECEIVED_AT,
    SENSOR_MASK,
    SEQ,
    STATION_ID,
    TS,
    TS_ASSIGNED,
    WriteBatch,
    score_column,
)
from faultline.store import (
    AnomalyCount,
    LatestAnomalies,
    StationReadings,
    Stations,
    Store,
    open_store,
)
from faultline.store.postgres import PostgresStore
from faultline.store.sqlite import SqliteStore
from faultline.tokens import TokenStore

DAY_MS = 86_400_000
DETECTORS = ("surprise", "isolation_forest")
QUERIES = ("latest_anomalies", "outliers_count 30d", "stations", "station readings page")


def station_name(k: int) -> str:
    return f"station-{k:05d}"


def layout(args: argparse.Namespace, end: int) -> tuple[int, int, int]:
    """(readings per station, each station's interval in ms, the first reading's time)."""
    ticks = args.readings // args.stations
    step = round(args.interval_s * 1000)
    return ticks, step, end - ticks * step


def generate(store: Store, sensors: tuple[str, ...], args: argparse.Namespace, end: int) -> float:
    """Write the readings, oldest first, a batch at a time as the engine would; readings/s."""
    rng = np.random.default_rng(0)
    stations = args.stations
    ticks, step, start = layout(args, end)
    names = np.array([station_name(k) for k in range(stations)], dtype=object)
    per_batch = max(1, args.batch // stations)  # ticks per batch: every station, like live
    began = time.perf_counter()
    last_report = began
    for first in range(0, ticks, per_batch):
        n_ticks = min(per_batch, ticks - first)
        rows = n_ticks * stations
        tick = first + np.repeat(np.arange(n_ticks), stations)
        # Stations are offset within a tick, so that their times differ as in a real fleet.
        ts = start + tick * step + np.tile(np.arange(stations) * (step // stations), n_ticks)
        anomaly = rng.integers(0, args.anomaly_every, rows) == 0
        frame = pd.DataFrame(
            {
                STATION_ID: np.tile(names, n_ticks),
                TS: ts,
                SEQ: tick,
                TS_ASSIGNED: np.zeros(rows, bool),
                RECEIVED_AT: ts + 40,
            }
        )
        for j, name in enumerate(sensors):
            frame[name] = rng.normal(25.0 + 10 * j, 2.0, rows)
        frame[IS_ANOMALY] = anomaly
        frame[SENSOR_MASK] = np.where(anomaly, 1 << rng.integers(0, len(sensors), rows), 0)
        frame[MODEL_VERSION] = "1"
        for name in DETECTORS:
            frame[score_column(name)] = rng.random(rows)
        store.write(WriteBatch(sensors, DETECTORS, frame, int(ts.max()) + 100))
        now = time.perf_counter()
        if now - last_report > 60:
            done = (first + n_ticks) * stations
            print(f"  … {done:,} readings, {done / (now - began):,.0f}/s", flush=True)
            last_report = now
    return ticks * stations / (time.perf_counter() - began)


def serve(url: str) -> None:
    """The server process: the API app over the store at `url` on a free port, printed as its
    first line; it stops when its standard input closes."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        store = open_store(url)
        ctx = AppContext(
            settings=settings,
            store=store,
            bus=MemoryBus(),
            metrics=Metrics(),
            clock=SystemClock(),
            models=None,
            tokens=TokenStore(Path(tmp) / "tokens.db"),
        )
        server = ApiServer(create_app(ctx), port=0)
        server.start()
        print(server.url, flush=True)
        sys.stdin.read()
        server.stop()
        store.close()


def requests_for(query: str, stations: int, start: int, last: int) -> Callable[[], str]:
    """A function giving the path of the next request for `query`."""
    if query == "latest_anomalies":
        return lambda: "/api/latest_anomalies"
    if query == "outliers_count 30d":
        return lambda: "/api/outliers_count?time_range=30d"
    if query == "stations":
        return lambda: "/api/stations"
    rng = random.Random(1)

    def page() -> str:
        station = station_name(rng.randrange(stations))
        at = rng.randrange(start, last)
        since = datetime.fromtimestamp(at / 1000, UTC).isoformat()
        return f"/api/stations/{station}/readings?from={quote(since)}"

    return page


async def latencies(
    base: str, path: Callable[[], str], clients: int, requests: int
) -> tuple[list[float], float]:
    """Each of `clients` sends `requests` requests in turn: every latency in ms, and the
    seconds they all took."""
    out: list[float] = []
    began = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def one_client() -> None:
            for _ in range(requests):
                began = time.perf_counter()
                response = await client.get(path())
                out.append(1000 * (time.perf_counter() - began))
                response.raise_for_status()

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return out, time.perf_counter() - began


def measure(url: str, store: Store, args: argparse.Namespace, start: int, end: int) -> dict:
    """Every query through the API: one client, then `args.clients` at once."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        if not base:
            raise RuntimeError("the API server process did not start")
        alone = {
            "latest_anomalies": LatestAnomalies(),
            "outliers_count 30d": AnomalyCount(end - 30 * DAY_MS, end),
            "stations": Stations(),
            "station readings page": StationReadings(station_name(0), start, end),
        }
        # A page starts where a whole page (1000 readings) lies before the end.
        last = max(start + 1, end - 1000 * layout(args, end)[1])
        results = {}
        for query in QUERIES:
            path = requests_for(query, args.stations, start, last)
            asyncio.run(latencies(base, path, 1, 3))  # warm the connection and the caches
            single, _ = asyncio.run(latencies(base, path, 1, args.requests))
            many, took = asyncio.run(latencies(base, path, args.clients, args.requests))
            results[query] = {
                "store_query_ms": best_ms(lambda q=alone[query]: store.query(q)),
                "one_client_p50_ms": float(np.percentile(single, 50)),
                "p50_ms": float(np.percentile(many, 50)),
                "p99_ms": float(np.percentile(many, 99)),
                "p99_vs_one_client_p50": float(np.percentile(many, 99) / np.percentile(single, 50)),
                "requests_per_s": len(many) / took,
            }
        return results
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)


def count_30_days(store: Store, sensors: tuple[str, ...], anomalies: int) -> dict[str, float]:
    """AnomalyCount over 30 days with `anomalies` anomalous readings spread over them (so every
    minute of anomaly_minutes is there), against counting them in the readings' partial index
    of anomalies, as the store did before anomaly_minutes (the baseline, same store)."""
    end = SystemClock().now_ms() // 60_000 * 60_000 - 1  # a partial minute at the end
    start = end - 30 * DAY_MS
    stations = 10
    ticks = anomalies // stations
    step = 30 * DAY_MS // ticks
    for first in range(0, ticks, 10_000):
        n = min(10_000, ticks - first)
        tick = first + np.repeat(np.arange(n), stations)
        ts = start + tick * step + np.tile(np.arange(stations), n)
        rows = len(ts)
        frame = pd.DataFrame(
            {
                STATION_ID: np.tile(np.array([f"c-{k}" for k in range(stations)], object), n),
                TS: ts,
                SEQ: tick,
                TS_ASSIGNED: np.zeros(rows, bool),
                RECEIVED_AT: ts + 40,
            }
        )
        for name in sensors:
            frame[name] = 25.0
        frame[IS_ANOMALY] = True
        frame[SENSOR_MASK] = 1
        frame[MODEL_VERSION] = "1"
        for name in DETECTORS:
            frame[score_column(name)] = 0.9
        store.write(WriteBatch(sensors, DETECTORS, frame, int(ts.max()) + 100))
    q = AnomalyCount(start, end)
    anomalous = "is_anomaly" if isinstance(store, PostgresStore) else "is_anomaly = 1"
    mark = "%s" if isinstance(store, PostgresStore) else "?"
    index_sql = f"SELECT count(*) FROM readings WHERE {anomalous} AND ts >= {mark} AND ts < {mark}"
    assert isinstance(store, SqliteStore | PostgresStore)
    reader = store._reader

    def by_index() -> int:
        with reader() as conn:
            return int(conn.execute(index_sql, (start, end)).fetchall()[0][0])

    assert store.query(q) == by_index() == ticks * stations
    minutes_ms = best_ms(lambda: store.query(q))
    index_ms = best_ms(by_index)
    return {"anomalies": ticks * stations, "minutes_ms": minutes_ms, "index_ms": index_ms}


def best_ms(work: Callable[[], object], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return 1000 * best


def run_backend(name: str, url: str, store: Store, args: argparse.Namespace) -> dict:
    settings = load_settings()
    end = SystemClock().now_ms()
    start = layout(args, end)[2]
    print(f"\n[{name}] writing {args.readings:,} readings …", flush=True)
    rate = generate(store, settings.sensor_names, args, end)
    print(f"  written at {rate:,.0f} readings/s", flush=True)
    if name == "postgres":  # the statistics autovacuum would have gathered by now
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    out: dict[str, Any] = {"backend": name, "write_rps": rate}
    results = measure(url, store, args, start, end)
    print(
        f"  {'query':<24} {'store alone':>11} {'1 client p50':>12} "
        f"{args.clients} clients: {'p50':>7} {'p99':>8} {'req/s':>7} {'p99/alone':>9}"
    )
    for query, r in results.items():
        print(
            f"  {query:<24} {r['store_query_ms']:8.1f} ms {r['one_client_p50_ms']:9.1f} ms "
            f"{'':>12}{r['p50_ms']:7.1f} {r['p99_ms']:8.1f} {r['requests_per_s']:7.0f} "
            f"{r['p99_vs_one_client_p50']:9.1f}"
        )
    out["deployed"] = results
    return out


@contextmanager
def backend_url(name: str, data_dir: Path | None) -> Iterator[str | None]:
    """A store URL of its own for `name` (None: PostgreSQL without FAULTLINE_TEST_POSTGRES):
    a file in a temporary directory, or a PostgreSQL schema, dropped afterwards."""
    if name == "sqlite":
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            yield f"sqlite:///{Path(tmp) / 'faultline.db'}"
        return
    base = os.environ.get("FAULTLINE_TEST_POSTGRES")
    if not base:
        yield None
        return
    schema = f"bench_queries_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000_000)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--interval-s", type=float, default=1.0, help="each station's")
    parser.add_argument("--anomaly-every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--count-anomalies", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    days = args.readings // args.stations * args.interval_s / 86_400
    print(
        f"{args.readings:,} readings of {args.stations:,} stations, one every "
        f"{args.interval_s:g} s each ({days:.1f} days), 1 in {args.anomaly_every} anomalous; "
        f"{args.clients} clients x {args.requests} requests"
    )
    out: list[dict[str, Any]] = []
    for name in args.backends:
        with backend_url(name, args.data_dir) as url:
            if url is None:
                print(f"\n[{name}] skipped: FAULTLINE_TEST_POSTGRES is not set")
                continue
            store = open_store(url)
            try:
                result = run_backend(name, url, store, args) if args.readings else {"backend": name}
            finally:
                store.close()
        if args.count_anomalies:
            with backend_url(name, args.data_dir) as url:
                assert url is not None
                store = open_store(url)
                try:
                    count = count_30_days(store, load_settings().sensor_names, args.count_anomalies)
                finally:
                    store.close()
            print(
                f"  outliers_count 30d over {count['anomalies']:,} anomalies spread over the "
                f"30 days: {count['minutes_ms']:.1f} ms from anomaly_minutes, "
                f"{count['index_ms']:.1f} ms counting the anomaly index "
                f"(x{count['index_ms'] / count['minutes_ms']:.0f})"
            )
            result["count_30_days"] = count
        out.append(result)
    print(
        json.dumps(
            {
                "bench": "queries",
                "readings": args.readings,
                "stations": args.stations,
                "interval_s": args.interval_s,
                "days": days,
                "clients": args.clients,
                "results": out,
            }
        )
    )


if __name__ == "__main__":
    main()
