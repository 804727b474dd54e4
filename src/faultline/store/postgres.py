"""The PostgreSQL store (`postgresql://user@host:port/dbname`), with psycopg 3.

Layout, and why:

* `readings` is split by event time: a TimescaleDB hypertable with one-day chunks when the
  server has the extension, else native range partitions of one day each, created by the write
  path before the first reading of a day arrives (there is no default partition: a reading never
  lands anywhere but in its day). Which of the two a schema uses is chosen once, when it is
  created, and recorded beside the schema version. The key (station_id, ts, seq) serves one
  station's time range; `readings_by_time` serves "the newest readings"; two partial indexes hold
  only anomalous rows, so anomaly queries never touch normal readings. Every query names ts or an
  indexed prefix, so PostgreSQL prunes partitions and reads each remaining one by index.
* `stations` keeps each station's newest reading and its counts, updated in the same
  transaction as the readings it summarises.
* `dead_letters` is unique by source, `fault_labels` by (station_id, sensor, kind, start_ts).
* `minute_aggregates` keeps count, sum, min and max per (station_id, minute, sensor), indexed by
  minute for "every station's minutes in a range"; `anomaly_minutes` the anomalous readings per
  minute, from which AnomalyCount sums whole minutes (faultline.store.aggregate_sql), locked
  in minute order by every writer; `global_anomalies` is keyed by (day,
  station_id, sensor, minute), with an index for one station's days; `global_anomaly_runs`
  keeps each day's latest run record. A succeeded run deletes its day's anomalies and inserts
  its own in the transaction that records it, so a rerun leaves exactly what it found.
* `checkpoints` keeps one detector checkpoint per (group, topic, partition), upserted in the
  batch's transaction (faultline.store.checkpoints).
* `alarm_transitions` (the log) and `alarms` (one row per alarm) are laid out, written and read
  as faultline.store.alarm_sql says, in the batch's transaction; their text sorts by code point.
* Text that queries sort by uses the "C" collation, so the order is by code point, as in every
  other store, whatever the database's locale.

A write is one transaction: the batch is copied into a temporary staging table, then a single
statement inserts it with ON CONFLICT DO NOTHING and, from the rows the insert RETURNs (exactly
the new ones), adds each station's counts and offers its newest new reading as the latest. It
answers how many rows went in, and when not all of them, which; the new rows' partial minute
aggregates are computed here from the batch's numbers (the database would have to parse its
JSON again) and merged by one more statement in the same transaction. A replay therefore
inserts nothing and counts nothing, and a partial overlap counts only the new rows. Readings,
stations and minute aggregates are written in key order, so writers in other processes storing
the same readings wait for each other instead of deadlocking. One connection writes, behind a
lock (the engine); readers borrow autocommit connections from a pool, and each query sees one
committed state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from faultline.schema import RUN_SUCCEEDED, WriteBatch
from faultline.store.aggregate import PARTIAL_COLUMNS
from faultline.store.aggregate_sql import Sql, anomaly_minutes_table, run_to_sql
from faultline.store.alarm_sql import AlarmWrites, alarm_tables
from faultline.store.base import (
    PING_TIMEOUT_S,
    Atomicity,
    DeadLetterRetention,
    Query,
    R,
    Store,
    StoreError,
)
from faultline.store.checkpoints import PUT_CHECKPOINT, checkpoint_rows
from faultline.store.encoded import EncodedReadings, encode_readings
from faultline.store.read_sql import READING_COLUMNS, Dialect, answer, query_sql
from faultline.store.valid import validate

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
NATIVE = "native"
TIMESCALEDB = "timescaledb"

# The readings' partial indexes are declared WHERE is_anomaly, a boolean column.
_DIALECT = Dialect(mark="%s", anomalous="is_anomaly", ts_bound_after_cursor=True)


def migrations(partitioning: str) -> tuple[tuple[str, ...], ...]:
    """Migration N (1-based) brings a schema from version N-1 to N. Append, never edit."""
    native = partitioning == NATIVE
    return (
        (
            f"""CREATE TABLE readings (
                station_id text COLLATE "C" NOT NULL,
                ts bigint NOT NULL,
                seq bigint NOT NULL,
                ts_assigned boolean NOT NULL,
                received_at bigint NOT NULL,
                processed_at bigint NOT NULL,
                "values" text NOT NULL,
                is_anomaly boolean NOT NULL,
                scores text NOT NULL,
                sensors text NOT NULL,
                model_version text NOT NULL,
                PRIMARY KEY (station_id, ts, seq)
            ){" PARTITION BY RANGE (ts)" if native else ""}""",
            *(
                ()
                if native
                else (
                    f"""SELECT create_hypertable('readings', 'ts', chunk_time_interval => {DAY_MS},
                        create_default_indexes => false)""",
                )
            ),
            "CREATE INDEX readings_by_time ON readings (ts, station_id, seq)",
            "CREATE INDEX anomalies_by_time ON readings (ts, station_id, seq) WHERE is_anomaly",
            "CREATE INDEX anomalies_by_station ON readings (station_id, ts, seq) WHERE is_anomaly",
            """CREATE TABLE stations (
                station_id text COLLATE "C" PRIMARY KEY,
                last_ts bigint NOT NULL,
                last_seq bigint NOT NULL,
                last_received_at bigint NOT NULL,
                last_values text NOT NULL,
                last_is_anomaly boolean NOT NULL,
                readings bigint NOT NULL,
                anomalies bigint NOT NULL
            )""",
            """CREATE TABLE dead_letters (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                received_at bigint NOT NULL,
                source text NOT NULL UNIQUE,
                reason text NOT NULL,
                payload bytea NOT NULL,
                kind text NOT NULL
            )""",
            "CREATE INDEX dead_letters_by_time ON dead_letters (received_at, id)",
            """CREATE TABLE fault_labels (
                station_id text COLLATE "C" NOT NULL,
                sensor text COLLATE "C" NOT NULL,
                kind text COLLATE "C" NOT NULL,
                start_ts bigint NOT NULL,
                end_ts bigint NOT NULL CHECK (end_ts >= start_ts),
                PRIMARY KEY (station_id, sensor, kind, start_ts)
            )""",
            "CREATE INDEX fault_labels_by_start ON fault_labels (start_ts, end_ts)",
        ),
        (
            """CREATE TABLE minute_aggregates (
                station_id text COLLATE "C" NOT NULL,
                minute bigint NOT NULL,
                sensor text COLLATE "C" NOT NULL,
                count bigint NOT NULL,
                sum double precision NOT NULL,
                min double precision NOT NULL,
                max double precision NOT NULL,
                PRIMARY KEY (station_id, minute, sensor)
            )""",
            "CREATE INDEX minute_aggregates_by_minute ON minute_aggregates (minute)",
            """CREATE TABLE global_anomalies (
                day integer NOT NULL,
                station_id text COLLATE "C" NOT NULL,
                sensor text COLLATE "C" NOT NULL,
                minute bigint NOT NULL,
                value double precision NOT NULL,
                expected double precision NOT NULL,
                score double precision NOT NULL,
                PRIMARY KEY (day, station_id, sensor, minute)
            )""",
            "CREATE INDEX global_anomalies_by_station ON global_anomalies (station_id, day)",
        ),
        (
            """CREATE TABLE global_anomaly_runs (
                day integer PRIMARY KEY,
                started_at bigint NOT NULL,
                finished_at bigint NOT NULL CHECK (finished_at >= started_at),
                status text NOT NULL CHECK (status IN ('succeeded', 'failed')),
                series bigint NOT NULL,
                skipped text NOT NULL,
                anomalies bigint NOT NULL,
                error text
            )""",
        ),
        (
            # One row per (group, topic, partition); see faultline.store.checkpoints.
            """CREATE TABLE checkpoints (
                consumer_group text NOT NULL,
                topic text NOT NULL,
                log_partition integer NOT NULL,
                log_offset bigint NOT NULL,
                state bytea NOT NULL,
                written_at bigint NOT NULL,
                PRIMARY KEY (consumer_group, topic, log_partition)
            )""",
        ),
        alarm_tables("bigint", 'text COLLATE "C"', ""),  # see faultline.store.alarm_sql
        anomaly_minutes_table("bigint", "", _DIALECT.anomalous),  # see aggregate_sql
    )


SCHEMA_VERSION = len(migrations(NATIVE))

# Serialises schema changes of one PostgreSQL schema across every process that opens it.
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('faultline-schema:' || current_schema()))"
_META = """CREATE TABLE IF NOT EXISTS faultline_schema (
    version integer NOT NULL, partitioning text NOT NULL)"""
_STAGE = "CREATE TEMP TABLE staged (LIKE readings) ON COMMIT DELETE ROWS"
_COPY_STAGED = f"COPY staged ({READING_COLUMNS}) FROM STDIN"
_LAST = ("last_ts", "last_seq", "last_received_at", "last_values", "last_is_anomaly")
_NEWER = "(excluded.last_ts, excluded.last_seq) > (stations.last_ts, stations.last_seq)"
_MOVE_LATEST = ", ".join(
    f"{c} = CASE WHEN {_NEWER} THEN excluded.{c} ELSE stations.{c} END" for c in _LAST
)
_MERGE_STAGED = f"""WITH inserted AS (
        INSERT INTO readings ({READING_COLUMNS}) SELECT {READING_COLUMNS} FROM staged
        ORDER BY station_id, ts, seq
        ON CONFLICT DO NOTHING
        RETURNING station_id, ts, seq, received_at, "values", is_anomaly
    ), added AS (
        SELECT station_id, count(*) AS readings, count(*) FILTER (WHERE is_anomaly) AS anomalies
        FROM inserted GROUP BY station_id
    ), newest AS (
        SELECT DISTINCT ON (station_id) station_id, ts, seq, received_at, "values", is_anomaly
        FROM inserted ORDER BY station_id, ts DESC, seq DESC
    ), summaries AS (
        INSERT INTO stations (station_id, {", ".join(_LAST)}, readings, anomalies)
        SELECT station_id, n.ts, n.seq, n.received_at, n."values", n.is_anomaly, a.readings,
            a.anomalies
        FROM newest AS n JOIN added AS a USING (station_id)
        ORDER BY station_id
        ON CONFLICT (station_id) DO UPDATE SET
            readings = stations.readings + excluded.readings,
            anomalies = stations.anomalies + excluded.anomalies,
            {_MOVE_LATEST}
    )
    SELECT count(*),
        CASE WHEN count(*) < %(staged)s THEN array_agg(station_id) END,
        CASE WHEN count(*) < %(staged)s THEN array_agg(ts) END,
        CASE WHEN count(*) < %(staged)s THEN array_agg(seq) END
    FROM inserted
"""
# The anomalies per minute (faultline.store.aggregate_sql), one statement, in minute order for
# the same reason as below.
_ADD_ANOMALY_MINUTES = """INSERT INTO anomaly_minutes AS a (minute, anomalies)
    SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS p (minute, anomalies) ORDER BY minute
    ON CONFLICT (minute) DO UPDATE SET anomalies = a.anomalies + excluded.anomalies"""
# One statement for all of a batch's minutes, in key order as every writer locks them, so
# writers of the same minutes cannot deadlock.
_ADD_MINUTES = """INSERT INTO minute_aggregates AS m
    (station_id, sensor, minute, count, sum, min, max)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[],
        %s::float8[], %s::float8[], %s::float8[]) AS p (station_id, sensor, minute, count,
        sum, min, max)
    ORDER BY station_id, minute, sensor
    ON CONFLICT (station_id, minute, sensor) DO UPDATE SET
    count = m.count + excluded.count, sum = m.sum + excluded.sum,
    min = least(m.min, excluded.min), max = greatest(m.max, excluded.max)"""
_ADD_DEAD_LETTER = """INSERT INTO dead_letters (received_at, source, reason, payload, kind)
    VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source) DO NOTHING"""
_ADD_GLOBAL_ANOMALY = """INSERT INTO global_anomalies
    (day, station_id, sensor, minute, value, expected, score) VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (day, station_id, sensor, minute) DO UPDATE SET
    value = excluded.value, expected = excluded.expected, score = excluded.score"""
_CLEAR_GLOBAL_ANOMALIES = "DELETE FROM global_anomalies WHERE day = %s"
_PUT_GLOBAL_ANOMALY_RUN = """INSERT INTO global_anomaly_runs
    (day, started_at, finished_at, status, series, skipped, anomalies, error)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (day) DO UPDATE SET
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    status = excluded.status, series = excluded.series, skipped = excluded.skipped,
    anomalies = excluded.anomalies, error = excluded.error"""
_PUT_CHECKPOINT = PUT_CHECKPOINT.format(m="%s")
_EXPIRE_OLD_LETTERS = "DELETE FROM dead_letters WHERE received_at < %s"
_EXPIRE_EXTRA_LETTERS = """DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
    ORDER BY received_at DESC, id DESC OFFSET %s)"""
_ADD_FAULT = """INSERT INTO fault_labels (station_id, sensor, kind, start_ts, end_ts)
    VALUES (%s, %s, %s, %s, %s) ON CONFLICT (station_id, sensor, kind, start_ts)
    DO UPDATE SET end_ts = greatest(fault_labels.end_ts, excluded.end_ts)"""
_ALARMS = AlarmWrites(mark="%s", greatest="greatest")
_PARTITION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('faultline-partitions:' || current_schema()))"
)
_ADD_PARTITION = "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings FOR VALUES FROM ({}) TO ({})"


class PostgresStore(Store):
    """A Store in a PostgreSQL schema (the first of the URL's search_path, else `public`).

    Safe for one writing thread and many reading threads; `readers` bounds the reading pool.
    """

    atomicity = Atomicity.BATCH  # one transaction per write (day partitions are made before it)

    def __init__(self, url: str, *, readers: int = 4, connect_timeout_s: float = 10.0) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ValueError(f"not a PostgreSQL URL: {exc}") from None
        defaults: dict[str, str | int] = {
            "connect_timeout": max(1, round(connect_timeout_s)),
            "application_name": "faultline",
        }
        self._conninfo = make_conninfo(
            url, **{k: v for k, v in defaults.items() if k not in params}
        )
        # For messages: the URL less user and password.
        self.where = (
            f"postgresql://{params.get('host', '')}:{params.get('port', 5432)}"
            f"/{params.get('dbname', '')}"
        )
        self._write_lock = threading.Lock()
        self._closed = False
        self._days: set[int] = set()  # native partitions known to exist
        self._writer = self._connect()
        try:
            self.partitioning = self._migrate()
            self._writer.execute(_STAGE)
        except BaseException as exc:
            self._writer.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open {self.where} as a Faultline store: {exc}") from exc
            raise
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=max(1, readers),
            check=psycopg_pool.ConnectionPool.check_connection,  # drops connections gone bad
            name="faultline-readers",
            open=True,
        )

    def write(self, batch: WriteBatch) -> None:
        valid = validate(batch)
        columns, letters, faults, anomalies, run = (
            valid.columns,
            valid.letters,
            valid.faults,
            valid.anomalies,
            valid.run,
        )
        readings = encode_readings(columns)
        checkpoints = checkpoint_rows(batch.checkpoints)
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                conn = self._live_writer()
                if readings and self.partitioning == NATIVE:
                    self._add_partitions(conn, {ts // DAY_MS for ts in readings.ts})
                with conn.transaction(), conn.cursor() as cur:
                    if readings:
                        new = _insert_readings(cur, readings, batch.processed_at)
                        if new.any():
                            partials = columns.minute_partials(new)
                            cur.execute(
                                _ADD_MINUTES, [partials[c].tolist() for c in PARTIAL_COLUMNS]
                            )
                            minutes = columns.anomaly_minutes(new)
                            if minutes:
                                cur.execute(
                                    _ADD_ANOMALY_MINUTES,
                                    [list(column) for column in zip(*minutes, strict=True)],
                                )
                    if letters:
                        cur.executemany(_ADD_DEAD_LETTER, letters)
                    if faults:
                        cur.executemany(_ADD_FAULT, faults)
                    if run is not None:
                        if run[3] == RUN_SUCCEEDED:
                            cur.execute(_CLEAR_GLOBAL_ANOMALIES, (run[0],))
                        cur.execute(_PUT_GLOBAL_ANOMALY_RUN, run_to_sql(run))
                    if anomalies:
                        cur.executemany(_ADD_GLOBAL_ANOMALY, anomalies)
                    if checkpoints:
                        cur.executemany(_PUT_CHECKPOINT, checkpoints)
                    _ALARMS.store(
                        lambda s, p: cur.execute(s, p).rowcount,
                        valid.transitions,
                        batch.processed_at,
                    )
            except psycopg.Error as exc:
                raise StoreError(f"write failed, nothing was stored: {exc}") from exc

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                conn = self._live_writer()
                with conn.transaction(), conn.cursor() as cur:
                    old = cur.execute(_EXPIRE_OLD_LETTERS, (retention.cutoff_ms(now_ms),)).rowcount
                    extra = cur.execute(_EXPIRE_EXTRA_LETTERS, (retention.max_count,)).rowcount
            except psycopg.Error as exc:
                raise StoreError(f"expiring dead letters failed: {exc}") from exc
        return int(old + extra)

    def query(self, q: Query[R]) -> R:
        return answer(q, self._sql(q), self._reader, psycopg.Error)

    def explain(self, q: Query[Any], *settings: str) -> list[str]:
        """PostgreSQL's plan for `q`, one line per row of EXPLAIN; `settings` such as
        "enable_seqscan = off" apply to this plan only."""
        statement, params = self._sql(q)
        with self._reader() as conn, conn.transaction():
            for setting in settings:
                conn.execute(f"SET LOCAL {setting}")
            return [row[0] for row in conn.execute(f"EXPLAIN {statement}", params)]

    def ping(self) -> None:
        # Not through _reader: the pool waits 30 s for a connection by default, and while the
        # server is down it has none to give, so /api/health would hang rather than answer.
        if self._closed:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection(timeout=PING_TIMEOUT_S) as conn:
                conn.execute("SELECT 1")
        except psycopg_pool.PoolTimeout as exc:
            raise StoreError(
                f"no connection to {self.where} within {PING_TIMEOUT_S:g} s: {exc}"
            ) from exc
        except (psycopg.Error, psycopg_pool.PoolClosed) as exc:
            raise StoreError(f"{self.where} does not answer: {exc}") from exc

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            self._pool.close()

    def _sql(self, q: Query[Any]) -> Sql:
        found = query_sql(q, _DIALECT)
        if found is None:
            raise TypeError(f"{type(self).__name__} cannot answer {type(q).__name__}")
        return found

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            # Autocommit: transactions are begun and ended explicitly, by conn.transaction().
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {exc}") from exc

    def _live_writer(self) -> psycopg.Connection[Any]:
        """The writing connection, replaced first when the server dropped the last one."""
        if self._writer.closed or self._writer.broken:
            self._writer.close()
            self._writer = self._connect()
            self._writer.execute(_STAGE)
        return self._writer

    def _migrate(self) -> str:
        """Bring the schema to SCHEMA_VERSION; return its partitioning."""
        conn = self._writer
        with conn.transaction():
            conn.execute(_SCHEMA_LOCK)
            conn.execute(_META)
            row = conn.execute("SELECT version, partitioning FROM faultline_schema").fetchone()
            if row is None:
                version, partitioning = 0, _choose_partitioning(conn)
                conn.execute("INSERT INTO faultline_schema VALUES (0, %s)", (partitioning,))
            else:
                version, partitioning = row
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where} has schema version {version}, newer than this Faultline "
                    f"knows ({SCHEMA_VERSION}): upgrade Faultline to open it"
                )
            for statements in migrations(partitioning)[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("UPDATE faultline_schema SET version = %s", (SCHEMA_VERSION,))
        return str(partitioning)

    def _add_partitions(self, conn: psycopg.Connection[Any], days: set[int]) -> None:
        """Create the day partitions `days` needs, in a transaction of their own: creating one
        locks the whole readings table, and that should last milliseconds, not a write."""
        missing = days - self._days
        if not missing:
            return
        with conn.transaction():
            conn.execute(_PARTITION_LOCK)
            for day in sorted(missing):
                conn.execute(
                    sql.SQL(_ADD_PARTITION).format(
                        sql.Identifier(f"readings_{day}"),
                        sql.Literal(day * DAY_MS),
                        sql.Literal((day + 1) * DAY_MS),
                    )
                )
        self._days |= missing

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg_pool.PoolClosed, psycopg_pool.PoolTimeout) as exc:
            if self._closed:
                raise StoreError("the store is closed") from exc
            raise StoreError(f"no connection to {self.where}: {exc}") from exc


def _choose_partitioning(conn: psycopg.Connection[Any]) -> str:
    """TimescaleDB when the server can load it into this database, else native partitions."""
    offered = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if offered is None:
        log.info("TimescaleDB is not installed: readings use native day partitions")
        return NATIVE
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        # Installed but unusable (typically not in shared_preload_libraries).
        log.warning("TimescaleDB cannot be loaded (%s): readings use native day partitions", exc)
        return NATIVE
    return TIMESCALEDB


def _insert_readings(
    cur: psycopg.Cursor[Any], readings: EncodedReadings, processed_at: int
) -> np.ndarray:
    """Insert the readings not stored yet; which of them were new, as a boolean mask."""
    processed = [int(processed_at)] * len(readings)
    with cur.copy(_COPY_STAGED) as copy:
        for row in zip(
            readings.station_id,
            readings.ts,
            readings.seq,
            readings.ts_assigned,
            readings.received_at,
            processed,
            readings.values,
            readings.is_anomaly,
            readings.scores,
            readings.sensors,
            readings.model_version,
            strict=True,
        ):
            copy.write_row(row)
    ((inserted, stations, ts, seq),) = cur.execute(
        _MERGE_STAGED, {"staged": len(readings)}
    ).fetchall()
    if inserted in (0, len(readings)):
        return np.full(len(readings), inserted > 0)
    new_keys = set(zip(stations, ts, seq, strict=True))
    keys = zip(readings.station_id, readings.ts, readings.seq, strict=True)
    return np.fromiter((key in new_keys for key in keys), bool, len(readings))
