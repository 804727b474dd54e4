"""SQLite store write rate, fresh and replayed, against bare executemany in the same process.

    .venv/bin/python bench/bench_store.py [--rows N] [--batch N] [--stations N] [--rounds N]

The store's write does more than insert: it checks and encodes the frame, keeps per-station
summaries and counts only rows it really inserted. The baselines insert the same rows, already
encoded, with one `executemany` per batch into a bare readings table with the same columns and
key: once without and once with the store's secondary indexes, so the ratios show what the
indexes and what the store's own work cost.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

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
from faultline.store import SqliteStore
from faultline.store.sqlite import MIGRATIONS

SENSORS = ("temperature", "humidity", "noise_level")
DETECTORS = ("isolation_forest", "robust")
T0 = 1_767_225_600_000


def make_batches(rows: int, batch: int, stations: int) -> list[WriteBatch]:
    rng = np.random.default_rng(0)
    i = np.arange(rows)
    ts = T0 + (i // stations) * 1000
    anomaly = rng.random(rows) < 0.001
    frame = pd.DataFrame(
        {
            STATION_ID: np.array([f"station-{k:04d}" for k in i % stations], dtype=object),
            TS: ts,
            SEQ: i // stations,
            TS_ASSIGNED: np.zeros(rows, bool),
            RECEIVED_AT: ts + 40,
        }
    )
    for name, mean in zip(SENSORS, (25.0, 60.0, 50.0), strict=True):
        frame[name] = rng.normal(mean, 3.0, rows)
    frame[IS_ANOMALY] = anomaly
    frame[SENSOR_MASK] = np.where(anomaly, 1, 0)
    frame[MODEL_VERSION] = "isolation-forest/1"
    for name in DETECTORS:
        frame[score_column(name)] = rng.random(rows)
    return [
        WriteBatch(SENSORS, DETECTORS, frame.iloc[s : s + batch].reset_index(drop=True), T0)
        for s in range(0, rows, batch)
    ]


def encoded(batch: WriteBatch) -> list[tuple[object, ...]]:
    f = batch.readings
    values = f[list(SENSORS)].to_numpy().tolist()
    scores = f[[score_column(d) for d in DETECTORS]].to_numpy().tolist()
    return [
        (
            ts,
            station,
            seq,
            0,
            received,
            batch.processed_at,
            json.dumps(dict(zip(SENSORS, v, strict=True))),
            int(anomaly),
            json.dumps(dict(zip(DETECTORS, sc, strict=True))),
            "[]",
            version,
        )
        for ts, station, seq, received, v, anomaly, sc, version in zip(
            f[TS].tolist(),
            f[STATION_ID].tolist(),
            f[SEQ].tolist(),
            f[RECEIVED_AT].tolist(),
            values,
            f[IS_ANOMALY].tolist(),
            scores,
            f[MODEL_VERSION].tolist(),
            strict=True,
        )
    ]


def rate(rows: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return rows / (time.perf_counter() - started)


def bare_table(path: Path, with_indexes: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")
    readings, *indexes = (
        s for s in MIGRATIONS[0] if s.startswith("CREATE TABLE readings") or "ON readings" in s
    )
    conn.execute(readings)
    for statement in indexes if with_indexes else ():
        conn.execute(statement)
    return conn


def bare_insert(conn: sqlite3.Connection, batches: list[list[tuple[object, ...]]]) -> None:
    sql = f"INSERT OR IGNORE INTO readings VALUES ({', '.join('?' * 11)})"
    for rows in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")


def one_round(
    tmp: Path, n: int, batches: list[WriteBatch], tuples: list[list[tuple[object, ...]]]
) -> dict[str, float]:
    """Rows/s of each contender into a fresh file: first all rows, then all of them again."""
    rates: dict[str, float] = {}
    store = SqliteStore(tmp / f"store-{n}.db")

    def write_all() -> None:
        for b in batches:
            store.write(b)

    rates["store fresh"] = rate(len(batches) * len(batches[0].readings), write_all)
    rates["store replay"] = rate(len(batches) * len(batches[0].readings), write_all)
    store.close()
    rows = sum(len(t) for t in tuples)
    for with_indexes, name in ((False, "bare key only"), (True, "bare + indexes")):
        conn = bare_table(tmp / f"{name}-{n}.db", with_indexes)
        rates[f"{name} fresh"] = rate(rows, lambda c=conn: bare_insert(c, tuples))
        rates[f"{name} replay"] = rate(rows, lambda c=conn: bare_insert(c, tuples))
        conn.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--stations", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args()

    batches = make_batches(args.rows, args.batch, args.stations)
    tuples = [encoded(b) for b in batches]
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for name, value in one_round(Path(tmp), n, batches, tuples).items():
                best[name] = max(best.get(name, 0.0), value)

    print(
        f"rows {args.rows}, batches of {args.batch}, {args.stations} stations, "
        f"sqlite {sqlite3.sqlite_version}, best of {args.rounds} rounds"
    )
    for phase in ("fresh", "replay"):
        store_rate = best[f"store {phase}"]
        print(f"store write      {phase:6s}  {store_rate:9.0f} rows/s")
        for name in ("bare key only", "bare + indexes"):
            bare_rate = best[f"{name} {phase}"]
            print(
                f"{name:16s} {phase:6s}  {bare_rate:9.0f} rows/s   "
                f"store/bare {store_rate / bare_rate:.2f}"
            )


if __name__ == "__main__":
    main()
