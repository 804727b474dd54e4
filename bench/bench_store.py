"""Store write rates, fresh and replayed, against bare inserts of the same rows.

    .venv/bin/python bench/bench_store.py [--rows N] [--batch N] [--stations N] [--rounds N]
                                          [--server-rows N]

The store's write does more than insert: it checks and encodes the frame, keeps per-station
summaries and counts only rows it really inserted. The SQLite baselines insert the same rows,
already encoded, with one `executemany` per batch into a bare readings table with the same
columns and key: once without and once with the store's secondary indexes, so the ratios show
what the indexes and what the store's own work cost.

With FAULTLINE_TEST_POSTGRES and FAULTLINE_TEST_CASSANDRA set (`scripts/services/svc.py env
postgres cassandra`), the PostgreSQL and Cassandra stores are measured too, each in a schema or
keyspace of its own that is dropped afterwards, on `--server-rows` readings. Their baselines:
one COPY per batch into a bare keyed table (PostgreSQL), and the same rows as plain
single-partition batches, without the conditional batches that make the store's counts exact
(Cassandra).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg
from cassandra.concurrent import execute_concurrent
from cassandra.query import BatchStatement, BatchType

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
from faultline.store import SqliteStore, Store
from faultline.store.cassandra import CassandraStore
from faultline.store.cassandra_schema import cluster, parse_url
from faultline.store.columns import batch_columns
from faultline.store.encoded import encode_readings
from faultline.store.postgres import PostgresStore
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


def store_rates(store: Store, batches: list[WriteBatch]) -> dict[str, float]:
    """Rows/s of `store` writing all batches into an empty store, then all of them again."""
    rows = sum(len(b.readings) for b in batches)

    def write_all() -> None:
        for b in batches:
            store.write(b)

    try:
        return {"store fresh": rate(rows, write_all), "store replay": rate(rows, write_all)}
    finally:
        store.close()


def one_round(
    tmp: Path, n: int, batches: list[WriteBatch], tuples: list[list[tuple[object, ...]]]
) -> dict[str, float]:
    """Rows/s of each contender into a fresh file: first all rows, then all of them again."""
    rates = store_rates(SqliteStore(tmp / f"store-{n}.db"), batches)
    rows = sum(len(t) for t in tuples)
    for with_indexes, name in ((False, "bare key only"), (True, "bare + indexes")):
        conn = bare_table(tmp / f"{name}-{n}.db", with_indexes)
        rates[f"{name} fresh"] = rate(rows, lambda c=conn: bare_insert(c, tuples))
        rates[f"{name} replay"] = rate(rows, lambda c=conn: bare_insert(c, tuples))
        conn.close()
    return rates


def server_columns(batch: WriteBatch) -> list[tuple[object, ...]]:
    """The batch's readings as the server stores hold them, in the order of their _COLS."""
    r = encode_readings(batch_columns(batch))
    return list(
        zip(
            r.station_id,
            r.ts,
            r.seq,
            r.ts_assigned,
            r.received_at,
            [batch.processed_at] * len(r),
            r.values,
            r.is_anomaly,
            r.scores,
            r.sensors,
            r.model_version,
            strict=True,
        )
    )


BARE_POSTGRES = """CREATE TABLE bare (
    station_id text COLLATE "C", ts bigint, seq bigint, ts_assigned boolean, received_at bigint,
    processed_at bigint, "values" text, is_anomaly boolean, scores text, sensors text,
    model_version text, PRIMARY KEY (station_id, ts, seq))"""


def postgres_round(base: str, batches: list[WriteBatch]) -> dict[str, float]:
    """The PostgreSQL store, then one COPY per batch into a bare keyed table, in a new schema."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    url = f"{base}?options={quote(f'-csearch_path={schema}')}"
    rows = [server_columns(b) for b in batches]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            rates = store_rates(PostgresStore(url), batches)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(BARE_POSTGRES)

                def copy_all() -> None:
                    for batch_rows in rows:
                        with (
                            conn.transaction(),
                            conn.cursor() as cur,
                            cur.copy("COPY bare FROM STDIN") as copy,
                        ):
                            for row in batch_rows:
                                copy.write_row(row)

                rates["bare fresh"] = rate(sum(map(len, rows)), copy_all)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return rates


BARE_CASSANDRA = """CREATE TABLE IF NOT EXISTS {ks}.bare (
    station_id text, day bigint, ts bigint, seq bigint, ts_assigned boolean, received_at bigint,
    processed_at bigint, sensor_values text, is_anomaly boolean, scores text, sensors text,
    model_version text, PRIMARY KEY ((station_id, day), ts, seq))"""
BARE_CASSANDRA_INSERT = """INSERT INTO {ks}.bare (station_id, ts, seq, ts_assigned, received_at,
    processed_at, sensor_values, is_anomaly, scores, sensors, model_version, day)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def cassandra_round(endpoint: str, batches: list[WriteBatch]) -> dict[str, float]:
    """The Cassandra store, then the same rows as plain single-partition batches of the store's
    chunk size, all partitions at once, in a keyspace of their own."""
    keyspace = f"bench_{uuid.uuid4().hex[:12]}"
    rates = store_rates(CassandraStore(f"cassandra://{endpoint}/{keyspace}"), batches)
    nodes = cluster(parse_url(f"cassandra://{endpoint}/{keyspace}"))
    session = nodes.connect()
    try:
        session.execute(BARE_CASSANDRA.format(ks=keyspace))
        insert = session.prepare(BARE_CASSANDRA_INSERT.format(ks=keyspace))
        per_batch = []  # like the store: one batch's partitions at once, batch after batch
        for b in batches:
            partitions: dict[tuple[object, int], list[tuple[object, ...]]] = {}
            for row in server_columns(b):
                day = row[1] // 86_400_000
                partitions.setdefault((row[0], day), []).append((*row, day))
            statements = []
            for part in partitions.values():
                for start in range(0, len(part), 500):
                    statement = BatchStatement(batch_type=BatchType.UNLOGGED)
                    for row in part[start : start + 500]:
                        statement.add(insert, row)
                    statements.append((statement, None))
            per_batch.append(statements)

        def insert_all() -> None:
            for statements in per_batch:
                execute_concurrent(session, statements)

        rates["bare fresh"] = rate(sum(len(b.readings) for b in batches), insert_all)
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        nodes.shutdown()
    return rates


def report(title: str, best: dict[str, float], bare_names: tuple[str, ...]) -> None:
    print(title)
    for phase in ("fresh", "replay"):
        store_rate = best[f"store {phase}"]
        print(f"store write      {phase:6s}  {store_rate:9.0f} rows/s")
        for name in bare_names:
            bare_rate = best.get(f"{name} {phase}")
            if bare_rate is not None:
                print(
                    f"{name:16s} {phase:6s}  {bare_rate:9.0f} rows/s   "
                    f"store/bare {store_rate / bare_rate:.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--stations", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--server-rows", type=int, default=50_000)
    args = parser.parse_args()

    batches = make_batches(args.rows, args.batch, args.stations)
    tuples = [encoded(b) for b in batches]
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for name, value in one_round(Path(tmp), n, batches, tuples).items():
                best[name] = max(best.get(name, 0.0), value)
    report(
        f"rows {args.rows}, batches of {args.batch}, {args.stations} stations, "
        f"sqlite {sqlite3.sqlite_version}, best of {args.rounds} rounds",
        best,
        ("bare key only", "bare + indexes"),
    )

    servers = {
        "postgresql": (os.environ.get("FAULTLINE_TEST_POSTGRES"), postgres_round),
        "cassandra": (os.environ.get("FAULTLINE_TEST_CASSANDRA"), cassandra_round),
    }
    server_batches = make_batches(args.server_rows, args.batch, args.stations)
    for server, (endpoint, measure) in servers.items():
        if not endpoint:
            print(f"\n{server}: not measured (set FAULTLINE_TEST_{server[:8].upper()})")
            continue
        best = {}
        for _ in range(args.rounds):
            for name, value in measure(endpoint, server_batches).items():
                best[name] = max(best.get(name, 0.0), value)
        report(
            f"\n{server} at {endpoint}: rows {args.server_rows}, batches of {args.batch}, "
            f"{args.stations} stations, best of {args.rounds} rounds",
            best,
            ("bare",),
        )


if __name__ == "__main__":
    main()
