"""`GET /api/stations` (polled by the dashboard every 1.5 s) with many stations.

The engine holds at most `engine.max_stations` (10,000 by default), so the stations table of a
store it writes grows to about that. For 1,000, 10,000 and 36,000 stations (the count of the
finding) in a SQLite store, it times the whole request through the app and, as the baseline
measured in the same run, the store's `Stations` query alone (one ordered read of the stations
table by its key): the ratio is what the API adds.

    PYTHONPATH=src .venv/bin/python bench/bench_stations.py [--stations 1000 10000 36000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from faultline.api.app import create_app
from faultline.api.context import AppContext
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
from faultline.store import SqliteStore, Stations
from faultline.tokens import TokenStore

T0 = SystemClock().now_ms() - 60_000


def best_s(work: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        begun = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - begun)
    return best


def fill(store: SqliteStore, stations: int, sensors: tuple[str, ...]) -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            STATION_ID: np.array([f"station_{i:05d}" for i in range(stations)], dtype=object),
            TS: np.full(stations, T0, np.int64),
            SEQ: np.zeros(stations, np.int64),
            TS_ASSIGNED: np.zeros(stations, bool),
            RECEIVED_AT: np.full(stations, T0 + 5, np.int64),
        }
    )
    for name in sensors:
        frame[name] = 25.0
    frame[IS_ANOMALY] = False
    frame[SENSOR_MASK] = np.zeros(stations, np.int64)
    frame[MODEL_VERSION] = ""
    frame[score_column("surprise")] = 0.5
    store.write(WriteBatch(sensors, ("surprise",), frame, T0 + 10))


def measure(stations: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        store = SqliteStore(Path(tmp) / "f.db")
        fill(store, stations, settings.sensor_names)
        ctx = AppContext(
            settings=settings,
            store=store,
            bus=MemoryBus(),
            metrics=Metrics(),
            clock=SystemClock(),
            models=None,
            tokens=TokenStore(Path(tmp) / "tokens.db"),
        )
        # The API answers for its own host names only (api/security.py).
        with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
            got = client.get("/api/stations").json()["stations"]
            assert len(got) == stations
            api_s = best_s(lambda: client.get("/api/stations").raise_for_status(), repeats)
        query_s = best_s(lambda: store.query(Stations()), repeats)
        store.close()
    return {
        "stations": stations,
        "api_ms": 1000 * api_s,
        "query_ms": 1000 * query_s,
        "api_vs_query": api_s / query_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[1000, 10_000, 36_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = []
    for n in args.stations:
        r = measure(n, args.repeats)
        results.append(r)
        print(
            f"{n:>6} stations: GET /api/stations {r['api_ms']:.0f} ms, the Stations query alone"
            f" {r['query_ms']:.0f} ms (x{r['api_vs_query']:.1f})"
        )
    print(json.dumps({"bench": "stations", "results": results}))


if __name__ == "__main__":
    main()
