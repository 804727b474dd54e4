"""The SQLite store: one file in WAL mode, its tables and indexes shaped by the queries it serves.

Layout, and why:

* `readings` is keyed (ts, station_id, seq) WITHOUT ROWID. That is the idempotency key
  (station_id, ts, seq) in the column order that makes live inserts append at the right edge of
  the tree: a batch holds the newest times of every station, so keying by station first would
  scatter each batch over every station's part of the file (measured about 5x slower).
  `readings_by_station` serves one station's time range; two partial indexes hold only anomalous
  rows, so anomaly queries never touch normal readings.
* `stations` keeps each station's newest reading and its counts, updated in the same transaction
  as the readings it summarises.
* `dead_letters` is unique by source, `fault_labels` by (station_id, sensor, kind, start_ts).

* `minute_aggregates` keeps count, sum, min and max per (station_id, minute, sensor), indexed
  by minute for "every station's minutes in a range"; `anomaly_minutes` the anomalous readings
  per minute, from which AnomalyCount sums whole minutes (faultline.store.aggregate_sql);
  `global_anomalies` is keyed by (day, station_id, sensor, minute), with an index for one
  station's days; `global_anomaly_runs` keeps each day's latest run record. A succeeded run
  deletes its day's anomalies and inserts its own in the transaction that records it, so a
  rerun leaves exactly what it found.
* `checkpoints` keeps one detector checkpoint per (group, topic, partition), upserted in the
  batch's transaction (faultline.store.checkpoints).
* `alarm_transitions` (the log) and `alarms` (one row per alarm) are laid out, written and read
  as faultline.store.alarm_sql says, in the batch's transaction.

Station counts and minute aggregates must grow by exactly the rows a write inserts, or replays
would count twice. A write inserts with INSERT OR IGNORE and looks at how many rows went in: all
of them (a fresh batch) or none (a replay) say which rows were new. Only a partial overlap needs
more: the insert is undone to a savepoint, the keys are staged in a temporary table to find the
new ones, and the insert is repeated. Then one upsert per station adds the counts and moves the
latest reading forward (never back: an older batch replayed late leaves it alone), and one
upsert per (station, minute, sensor) merges the new rows' partial aggregates. A station that
gained no rows needs no upsert, since every stored row was offered as latest when it was
inserted. Everything happens in one transaction.

One connection writes, behind a lock (the engine); readers (API threads) borrow connections from
a pool, and WAL lets them read while the writer writes.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from faultline.schema import RUN_SUCCEEDED, WriteBatch
from faultline.store.aggregate import partial_rows
from faultline.store.aggregate_sql import Sql, anomaly_minutes_table, run_to_sql
from faultline.store.alarm_sql import AlarmWrites, alarm_tables
from faultline.store.base import Atomicity, DeadLetterRetention, Query, R, Store, StoreError
from faultline.store.checkpoints import PUT_CHECKPOINT, checkpoint_rows
from faultline.store.columns import (
    BatchColumns,
)
from faultline.store.json_text import json_list, json_objects
from faultline.store.read_sql import Dialect, answer, query_sql
from faultline.store.valid import validate

# The readings' partial indexes are declared WHERE is_anomaly = 1, an integer column.
_DIALECT = Dialect(mark="?", anomalous="is_anomaly = 1", ts_bound_after_cursor=False)

# Migration N (1-based) brings a database from user_version N-1 to N. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE readings (
            ts INTEGER NOT NULL,
            station_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts_assigned INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            processed_at INTEGER NOT NULL,
            "values" TEXT NOT NULL,
            is_anomaly INTEGER NOT NULL CHECK (is_anomaly IN (0, 1)),
            scores TEXT NOT NULL,
            sensors TEXT NOT NULL,
            model_version TEXT NOT NULL,
            PRIMARY KEY (ts, station_id, seq)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX readings_by_station ON readings (station_id, ts, seq)",
        # is_anomaly is carried so that counting in a time range reads the index alone.
        """CREATE INDEX anomalies_by_time ON readings (ts, station_id, seq, is_anomaly)
            WHERE is_anomaly = 1""",
        "CREATE INDEX anomalies_by_station ON readings (station_id, ts, seq) WHERE is_anomaly = 1",
        """CREATE TABLE stations (
            station_id TEXT PRIMARY KEY,
            last_ts INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            last_received_at INTEGER NOT NULL,
            last_values TEXT NOT NULL,
            last_is_anomaly INTEGER NOT NULL,
            readings INTEGER NOT NULL,
            anomalies INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            received_at INTEGER NOT NULL,
            source TEXT NOT NULL UNIQUE,
            reason TEXT NOT NULL,
            payload BLOB NOT NULL
        ) STRICT""",
        "CREATE INDEX dead_letters_by_time ON dead_letters (received_at)",
        """CREATE TABLE fault_labels (
            station_id TEXT NOT NULL,
            sensor TEXT NOT NULL,
            kind TEXT NOT NULL,
            start_ts INTEGER NOT NULL,
            end_ts INTEGER NOT NULL CHECK (end_ts >= start_ts),
            PRIMARY KEY (station_id, sensor, kind, start_ts)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX fault_labels_by_start ON fault_labels (start_ts)",
    ),
    ("ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'invalid'",),
    (
        """CREATE TABLE minute_aggregates (
            station_id TEXT NOT NULL,
            minute INTEGER NOT NULL,
            sensor TEXT NOT NULL,
            count INTEGER NOT NULL,
            sum REAL NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            PRIMARY KEY (station_id, minute, sensor)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX minute_aggregates_by_minute ON minute_aggregates (minute)",
        """CREATE TABLE global_anomalies (
            day INTEGER NOT NULL,
            station_id TEXT NOT NULL,
            sensor TEXT NOT NULL,
            minute INTEGER NOT NULL,
            value REAL NOT NULL,
            expected REAL NOT NULL,
            score REAL NOT NULL,
            PRIMARY KEY (day, station_id, sensor, minute)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX global_anomalies_by_station ON global_anomalies (station_id, day)",
    ),
    (
        """CREATE TABLE global_anomaly_runs (
            day INTEGER PRIMARY KEY,
            started_at INTEGER NOT NULL,
            finished_at INTEGER NOT NULL CHECK (finished_at >= started_at),
            status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
            series INTEGER NOT NULL,
            skipped TEXT NOT NULL,
            anomalies INTEGER NOT NULL,
            error TEXT
        ) STRICT""",
    ),
    (
        # One row per (group, topic, partition); see faultline.store.checkpoints.
        """CREATE TABLE checkpoints (
            consumer_group TEXT NOT NULL,
            topic TEXT NOT NULL,
            log_partition INTEGER NOT NULL,
            log_offset INTEGER NOT NULL,
            state BLOB NOT NULL,
            written_at INTEGER NOT NULL,
            PRIMARY KEY (consumer_group, topic, log_partition)
        ) STRICT, WITHOUT ROWID""",
    ),
    alarm_tables("INTEGER", "TEXT", " STRICT, WITHOUT ROWID"),  # see faultline.store.alarm_sql
    anomaly_minutes_table("INTEGER", " STRICT", _DIALECT.anomalous),  # see aggregate_sql
)

# The columns in _reading_tuples' order, the key's (ts, station_id, seq) first.
_INSERT_READINGS = f"""INSERT OR IGNORE INTO readings (ts, station_id, seq, ts_assigned,
    received_at, processed_at, "values", is_anomaly, scores, sensors, model_version)
    VALUES ({", ".join("?" * 11)})"""
_STAGE = """CREATE TEMP TABLE staged_keys (
    ts INTEGER, station_id TEXT, seq INTEGER, position INTEGER)"""
_STAGE_KEYS = "INSERT INTO temp.staged_keys VALUES (?, ?, ?, ?)"
_NEW_POSITIONS = """SELECT position FROM temp.staged_keys AS s
    WHERE NOT EXISTS (SELECT 1 FROM main.readings AS r
                      WHERE r.ts = s.ts AND r.station_id = s.station_id AND r.seq = s.seq)"""
_CLEAR_STAGE = "DELETE FROM temp.staged_keys"
_LAST = ("last_ts", "last_seq", "last_received_at", "last_values", "last_is_anomaly")
_NEWER = "(excluded.last_ts, excluded.last_seq) > (stations.last_ts, stations.last_seq)"
_UPDATE_STATION = f"""INSERT INTO stations (station_id, {", ".join(_LAST)}, readings, anomalies)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_id) DO UPDATE SET
    readings = stations.readings + excluded.readings,
    anomalies = stations.anomalies + excluded.anomalies,
    {", ".join(f"{c} = iif({_NEWER}, excluded.{c}, stations.{c})" for c in _LAST)}"""
_ADD_MINUTE = """INSERT INTO minute_aggregates (station_id, sensor, minute, count, sum, min, max)
    VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_id, minute, sensor) DO UPDATE SET
    count = count + excluded.count, sum = sum + excluded.sum, min = min(min, excluded.min),
    max = max(max, excluded.max)"""
_ADD_ANOMALY_MINUTE = """INSERT INTO anomaly_minutes (minute, anomalies) VALUES (?, ?)
    ON CONFLICT (minute) DO UPDATE SET anomalies = anomalies + excluded.anomalies"""
_ADD_GLOBAL_ANOMALY = """INSERT INTO global_anomalies
    (day, station_id, sensor, minute, value, expected, score) VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (day, station_id, sensor, minute) DO UPDATE SET
    value = excluded.value, expected = excluded.expected, score = excluded.score"""
_CLEAR_GLOBAL_ANOMALIES = "DELETE FROM global_anomalies WHERE day = ?"
_PUT_GLOBAL_ANOMALY_RUN = """INSERT OR REPLACE INTO global_anomaly_runs
    (day, started_at, finished_at, status, series, skipped, anomalies, error)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_ADD_DEAD_LETTER = """INSERT INTO dead_letters (received_at, source, reason, payload, kind)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO NOTHING"""
_PUT_CHECKPOINT = PUT_CHECKPOINT.format(m="?")
_EXPIRE_OLD_LETTERS = "DELETE FROM dead_letters WHERE received_at < ?"
_EXPIRE_EXTRA_LETTERS = """DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
    ORDER BY received_at DESC, id DESC LIMIT -1 OFFSET ?)"""
_ADD_FAULT = """INSERT INTO fault_labels (station_id, sensor, kind, start_ts, end_ts)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (station_id, sensor, kind, start_ts)
    DO UPDATE SET end_ts = max(end_ts, excluded.end_ts)"""
_ALARMS = AlarmWrites(mark="?", greatest="max")


class SqliteStore(Store):
    """A Store in one SQLite file; safe for one writing thread and many reading threads."""

    atomicity = Atomicity.BATCH  # one transaction per write

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = False
        self._writer = self._connect()
        try:
            self._prepare_writer()
        except (sqlite3.Error, StoreError) as exc:
            self._writer.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open {self.path} as a Faultline store: {exc}") from exc

    def write(self, batch: WriteBatch) -> None:
        valid = validate(batch)
        columns, letters, faults, anomalies, run = (
            valid.columns,
            valid.letters,
            valid.faults,
            valid.anomalies,
            valid.run,
        )
        readings = _reading_tuples(columns, batch.processed_at)
        checkpoints = checkpoint_rows(batch.checkpoints)
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                if readings:
                    new = _insert_readings(conn, readings)
                    if new.any():
                        added = columns.counts_per_station(new)
                        conn.executemany(_UPDATE_STATION, _station_rows(columns, readings, added))
                        conn.executemany(_ADD_MINUTE, partial_rows(columns.minute_partials(new)))
                        minutes = columns.anomaly_minutes(new)
                        if minutes:
                            conn.executemany(_ADD_ANOMALY_MINUTE, minutes)
                conn.executemany(_ADD_DEAD_LETTER, letters)
                conn.executemany(_ADD_FAULT, faults)
                if run is not None:
                    if run[3] == RUN_SUCCEEDED:
                        conn.execute(_CLEAR_GLOBAL_ANOMALIES, (run[0],))
                    conn.execute(_PUT_GLOBAL_ANOMALY_RUN, run_to_sql(run))
                conn.executemany(_ADD_GLOBAL_ANOMALY, anomalies)
                if checkpoints:
                    conn.executemany(_PUT_CHECKPOINT, checkpoints)
                _ALARMS.store(
                    lambda s, p: conn.execute(s, p).rowcount, valid.transitions, batch.processed_at
                )
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"write failed, nothing was stored: {exc}") from exc
                raise

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                old = conn.execute(_EXPIRE_OLD_LETTERS, (retention.cutoff_ms(now_ms),)).rowcount
                extra = conn.execute(_EXPIRE_EXTRA_LETTERS, (retention.max_count,)).rowcount
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"expiring dead letters failed: {exc}") from exc
                raise
        return int(old + extra)

    def query(self, q: Query[R]) -> R:
        return answer(q, self._sql(q), self._reader, sqlite3.Error)

    def explain(self, q: Query[Any]) -> list[str]:
        """SQLite's query plan for `q`, one line per step (to check that indexes serve it)."""
        sql, params = self._sql(q)
        with self._reader() as conn:
            return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

    def close(self) -> None:
        with self._write_lock, self._pool_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            while True:
                try:
                    self._idle.get_nowait().close()
                except queue.Empty:
                    break

    def _sql(self, q: Query[Any]) -> Sql:
        found = query_sql(q, _DIALECT)
        if found is None:
            raise TypeError(f"{type(self).__name__} cannot answer {type(q).__name__}")
        return found

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # transactions are begun and ended explicitly
                check_same_thread=False,  # each connection is used by one thread at a time
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            # Under WAL the file stays consistent; NORMAL risks only the last commits on power loss.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        return conn

    def _prepare_writer(self) -> None:
        conn = self._writer
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{self.path} cannot use WAL mode (journal_mode is {mode})")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: keeps the indexes' hot pages
        conn.execute("PRAGMA temp_store = MEMORY")
        self._migrate()
        conn.execute(_STAGE)

    def _migrate(self) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")  # re-read the version under the lock: others may migrate
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Faultline "
                    f"knows ({len(MIGRATIONS)}): upgrade Faultline to open it"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
        try:
            yield conn
        finally:
            with self._pool_lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.put(conn)


def _reading_tuples(columns: BatchColumns, processed_at: int) -> list[tuple[Any, ...]]:
    names, which = columns.responsible_sensors()
    sensor_texts = [json_list(group) for group in names]
    return list(
        zip(
            columns.ts.tolist(),
            columns.station_id.tolist(),
            columns.seq.tolist(),
            columns.ts_assigned.tolist(),
            columns.received_at.tolist(),
            [int(processed_at)] * len(columns),
            json_objects(columns.values, columns.sensors, omit_nan=True).tolist(),
            columns.is_anomaly.tolist(),
            json_objects(columns.scores, columns.detectors, omit_nan=False).tolist(),
            [sensor_texts[w] for w in which.tolist()],
            columns.model_version.tolist(),
            strict=True,
        )
    )


def _insert_readings(conn: sqlite3.Connection, readings: list[tuple[Any, ...]]) -> np.ndarray:
    """Insert the readings not stored yet; which of them were new, as a boolean mask."""
    conn.execute("SAVEPOINT readings")
    inserted = conn.executemany(_INSERT_READINGS, readings).rowcount
    if inserted in (0, len(readings)):
        return np.full(len(readings), inserted > 0)
    conn.execute("ROLLBACK TO readings")
    conn.executemany(_STAGE_KEYS, ((r[0], r[1], r[2], i) for i, r in enumerate(readings)))
    new = np.zeros(len(readings), bool)
    new[[row[0] for row in conn.execute(_NEW_POSITIONS)]] = True
    conn.execute(_CLEAR_STAGE)
    conn.executemany(_INSERT_READINGS, readings)
    return new


def _station_rows(
    columns: BatchColumns, readings: list[tuple[Any, ...]], added: dict[str, tuple[int, int]]
) -> list[tuple[Any, ...]]:
    """The _UPDATE_STATION rows: each station's newest reading in the batch, with its counts."""
    rows = []
    for i in columns.latest_per_station().tolist():
        ts, station, seq, _, received, _, values, anomaly, *_ = readings[i]
        if station in added:
            rows.append((station, ts, seq, received, values, anomaly, *added[station]))
    return rows
