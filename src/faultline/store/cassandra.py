"""The Cassandra store, with cassandra-driver: tables and URL in faultline.store.cassandra_schema.

Idempotency and counts. INSERT is an upsert: writing a reading again would replace the first one
(which must win), and adding to a counter on every write would count replays twice. So a write
first reads, per (station, day) partition it touches, which of its keys are stored already and
the partition's static counts, then sends only the new rows together with the new counts as one
conditional batch on that partition, `... SET n_readings = new IF n_readings = old`. A
single-partition batch applies atomically and in isolation, so a partition's rows and counts
never disagree, and a reader sees a partition's share of a write whole or not at all. The
condition (a lightweight transaction) makes a writer racing another writer of the same
partition (a second engine, a replay) lose instead of counting twice: the loser re-reads at the
SERIAL level and retries with what is still new. Counters were not an option: an increment that
times out may or may not have applied, so it cannot be retried safely. The price is one Paxos
round per partition and chunk of a write, not per row.

1-minute aggregates ride on the same condition. Each readings partition keeps its minutes'
count, sum, min and max in a static map beside the counts; the first read fetches the minutes
the batch touches, and the conditional batch writes them back merged with the partials of
exactly the rows it inserts. Kept in a table of their own they would need a second write that
no condition ties to the first (a conditional batch may not span tables): a replay could not
tell whether that write had happened, so it would either add the rows twice or never. Here a
reading and its share of the aggregates are stored together or not at all.

What is not atomic: a write spans partitions, and Cassandra has no transaction across them.
Everything is checked before anything is sent, so only the cluster failing fails a write
halfway; the order (indexes, then anomaly rows, then readings) keeps readers from seeing a
reading without its index entries or its anomaly row. After such a failure the anomaly rows
already written are visible until the batch is written again, which the engine does because it
acknowledges a batch only once its write succeeded; the replay then completes it exactly.
Dead letters get their ids from a sequence advanced by LWT and are unique by source with
INSERT ... IF NOT EXISTS; their by-day index is rewritten from the stored letter on every
replay, so it heals after a half-finished write too. Checkpoints are written last, each by
lightweight transaction (see `_write_checkpoints`), so one never covers readings not stored.

A global-anomaly run replaces its day's results within the day's one `global_anomalies`
partition, whose static columns hold the run record. The writer picks a write timestamp T above
the stored record's (so a rerun wins even when its host's clock is behind the last run's) and
sends one single-partition batch: delete every row at T - 1, insert the new anomalies at T, set
the record at T. Such a batch applies atomically and in isolation, so a reader sees the old
run's results and record or the new ones, never a mix, and an anomaly the rerun no longer finds
is gone. A day with more than _GLOBAL_ANOMALY_ROWS anomalies goes in several such batches, the
deletion in the first and the record in the last, which is atomic per batch only: readers may
see part of the new results beside the old record, and a write that fails between batches
leaves part of them (the job then records the run as failed). Either way the next run of the
day deletes everything older than its own T, so running a day again is idempotent and always
ends with exactly its results. A failed run sets only the record.

Alarms. The transition log is kept four times, each copy keyed by the transition's key within
partitions its query names: `alarm_log` by key alone, `alarm_history` by alarm (AlarmHistory),
`alarm_days` by the UTC day of `ts` (AlarmTransitions reads the days of its range that `buckets`
lists) and `alarm_feed` by the UTC day of `recorded_at` (TransitionFeed reads those days in
order, each by (recorded_at, key)). The log by key decides what every copy holds: a write reads
it at its keys and takes the stored transition and `recorded_at` of every key found; a key not
found is stored by INSERT ... IF NOT EXISTS, and one that a racing write stored first comes back
from it as stored. Then the other copies are written, then the alarms' rows (below), each
partition's share as one unlogged batch (so atomic per partition), all idempotent upserts of the
same rows whoever writes them: a replay of a write that failed after the log completes them, and
the checkpoints still come after all of it. The lightweight transaction is paid once per
transition, by its first write (a replay reads only); readings and their counts cost one per
partition and batch already. Write timestamps alone (the earliest write winning) would not do: a
key does not fix the transition's place in the other copies (an ack's key leaves out its time,
and `recorded_at` is in the feed's), so two writers racing with one key would leave two rows
that every read would have to check against the log by key.

Each alarm has one row in `alarms`, a cell per part (condition, acknowledgement, shelving). A
write reads the rows of its alarms with the keys, takes its transitions into them as
faultline.store.alarm_rows says (the rules every store shares, in the same order as the memory
store), and sets each part a transition changed by its own UPDATE, at the write timestamp of
that transition's place in the part's order: the condition at ts * 1000 + rank (clear < raise <
escalate within a millisecond), the acknowledgement at activation_ts * 1000, the shelving at
ts * 1000. Each cell is led by the key of the transition that set it, and of two cells with one
timestamp Cassandra keeps the greater value, so the later key wins a tie, as in the history's
order. So no write overwrites a part with an older one, whatever it read, and the engine and an
operator never overwrite each other's part: the row read only decides which transitions are
taken, and what a clear keeps (the severity and sensors of the activation it ends, when the row
holds it). Transitions the log held already are taken again: that changes nothing when their
first write got through, and completes it when it did not. Writers racing with transitions of
one alarm's condition (only the engine writes those, one per station) leave what the two in one
order or the other would have. A row's `changed_at` is the latest time its parts hold, taken
when read. Since these write timestamps are event times, not the time of writing, a DELETE at
the current time would not remove every cell of a row: empty `alarms` with TRUNCATE, or delete
at a timestamp above LAST_MS * 1000.

Alarm rows are few (stations x sensors x kinds) and the listing is sorted by `changed_at`, an
index of which would have to drop an alarm's old entry at every change, something writers of a
row's different parts could not agree on without a transaction. So the rows live in ALARM_SHARDS
partitions by station, and Alarms reads all of them (one, when it names a station) and filters,
sorts and pages here: every page reads every alarm row (of the station), a few hundred bytes
each, e.g. 3 MB for 1000 stations x 4 sensors x 2 kinds. An alarm's history partition grows with
its transitions, without bound until alarms have a retention.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from cassandra import DriverException, RequestExecutionException, RequestValidationException
from cassandra.cluster import NoHostAvailable, ResultSet
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionException
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType

from faultline.alarm_schema import (
    AlarmKey,
    AlarmState,
    AlarmTransition,
    Condition,
    Operator,
    SensorShare,
)
from faultline.schema import (
    RUN_SUCCEEDED,
    Checkpoint,
    FaultLabel,
    GlobalAnomaly,
    GlobalAnomalyRun,
    WriteBatch,
)
from faultline.store.aggregate import (
    MINUTE_MS,
    Partial,
    aggregate_frame,
    merge_partial,
    partial_rows,
)
from faultline.store.alarm_rows import (
    ACTION_RANK,
    StoredAlarm,
    action_rank,
    history_order,
    matches,
    take,
)
from faultline.store.base import (
    PING_TIMEOUT_S,
    AlarmHistory,
    AlarmPage,
    AlarmRow,
    Alarms,
    AlarmTransitions,
    AnomalyCount,
    Atomicity,
    Checkpoints,
    DeadLetterCount,
    DeadLetterRetention,
    DeadLetterRow,
    DeadLetters,
    FaultLabels,
    GlobalAnomalies,
    GlobalAnomalyRuns,
    LatestAnomalies,
    MinuteAggregates,
    Query,
    R,
    ReadingPage,
    ReadingRow,
    RecentReadings,
    RecordedTransition,
    StationReadings,
    Stations,
    StationSummary,
    Store,
    StoreError,
    TransitionFeed,
)
from faultline.store.cassandra_schema import (
    ALARM_SHARDS,
    DAY_MS,
    LONG_FAULTS,
    CassandraOptions,
    cluster,
    migrate,
    parse_url,
)
from faultline.store.checkpoints import CheckpointRow, checkpoint, checkpoint_rows
from faultline.store.columns import (
    BatchColumns,
    GlobalAnomalyRow,
    GlobalAnomalyRunRow,
    day_number,
    global_anomaly,
    global_anomaly_run,
    recent_frame,
)
from faultline.store.encoded import EncodedReadings, decode_reading, encode_readings
from faultline.store.valid import validate

_ERRORS = (
    DriverException,
    RequestExecutionException,
    RequestValidationException,
    NoHostAvailable,
    ConnectionException,
)
_MIN, _MAX = -(2**63), 2**63 - 1
_CHUNK_ROWS = 500  # rows per conditional batch: one Paxos round each, and modest mutations
_RETRIES = 20  # lost LWT races in a row before a write gives up
_GLOBAL_ANOMALY_ROWS = 5000  # a run's results per single-partition batch: about 0.5 MB

# Series in `buckets`.
_READINGS = "readings"
_ANOMALIES = "anomalies"
_STATION_ANOMALIES = "station_anomalies"
_DEAD_LETTERS = "dead_letters"
_FAULTS = "faults"
_GLOBAL_ANOMALIES = "global_anomalies"
_ALARM_DAYS = "alarm_days"
_ALARM_FEED = "alarm_feed"
_LETTER_IDS = "dead_letter_id"


_COLS = (
    "station_id, ts, seq, ts_assigned, received_at, processed_at, sensor_values, is_anomaly, "
    "scores, sensors, model_version"
)  # a reading in decode_reading's order
_TWELVE = ", ".join("?" * 12)
_TRANSITION = (
    "station_id, sensor, kind, ts, action, activation_ts, actor, severity, shares, comment, "
    "until, detail"
)  # an alarm transition in _transition's order
_LOGGED = f"{_TRANSITION}, recorded_at"
_LOGGED_NAMES = tuple(name.strip() for name in _LOGGED.split(","))
_ALARM = "shard = ? AND station_id = ? AND sensor = ? AND kind = ?"  # one alarm's row
_ALARM_ROW = "station_id, sensor, kind, condition, ack, shelving"  # _stored_alarm's order
_CQL = {
    "add_station": "INSERT INTO {ks}.stations (part, station_id) VALUES (0, ?)",
    "station_ids": "SELECT station_id FROM {ks}.stations WHERE part = 0",
    "add_bucket": "INSERT INTO {ks}.buckets (kind, owner, bucket) VALUES (?, ?, ?)",
    "days_desc": "SELECT bucket FROM {ks}.buckets WHERE kind = ? AND owner = ? "
    "AND bucket >= ? AND bucket <= ?",
    "days_asc": "SELECT bucket FROM {ks}.buckets WHERE kind = ? AND owner = ? "
    "AND bucket >= ? AND bucket <= ? ORDER BY bucket ASC",
    "keys_in_range": "SELECT ts, seq FROM {ks}.readings WHERE station_id = ? AND day = ? "
    "AND ts >= ? AND ts <= ?",
    "partition_count": "SELECT n_readings, n_anomalies, minutes[?..?] FROM {ks}.readings "
    "WHERE station_id = ? AND day = ? LIMIT 1",
    "minutes_of_day": "SELECT minutes[?..?] FROM {ks}.readings "
    "WHERE station_id = ? AND day = ? LIMIT 1",
    "add_reading": f"INSERT INTO {{ks}}.readings (day, {_COLS}) VALUES ({_TWELVE})",
    "set_counts": "UPDATE {ks}.readings SET n_readings = ?, n_anomalies = ?, "
    "minutes = minutes + ? WHERE station_id = ? AND day = ? IF n_readings = ?",
    "add_anomaly": f"INSERT INTO {{ks}}.anomalies (day, {_COLS}) VALUES ({_TWELVE})",
    "add_station_anomaly": f"INSERT INTO {{ks}}.station_anomalies (day, {_COLS}) "
    f"VALUES ({_TWELVE})",
    "anomalies_of_day": f"SELECT {_COLS} FROM {{ks}}.anomalies WHERE day = ? LIMIT ?",
    "station_anomalies_of_day": f"SELECT {_COLS} FROM {{ks}}.station_anomalies "
    "WHERE station_id = ? AND day = ? LIMIT ?",
    "count_anomalies": "SELECT count(*) FROM {ks}.anomalies WHERE day = ? AND ts >= ? AND ts < ?",
    "readings_from": f"SELECT {_COLS} FROM {{ks}}.readings WHERE station_id = ? AND day = ? "
    "AND ts >= ? AND ts < ? LIMIT ?",
    "readings_after": f"SELECT {_COLS} FROM {{ks}}.readings WHERE station_id = ? AND day = ? "
    "AND (ts, seq) > (?, ?) AND (ts) < (?) LIMIT ?",
    "partition_counts": "SELECT day, n_readings, n_anomalies FROM {ks}.readings "
    "WHERE station_id = ? AND day IN ? PER PARTITION LIMIT 1",
    "newest_reading": f"SELECT {_COLS} FROM {{ks}}.readings WHERE station_id = ? AND day = ? "
    "ORDER BY ts DESC, seq DESC LIMIT 1",
    "recent_of_day": "SELECT ts, seq, sensor_values FROM {ks}.readings WHERE station_id = ? "
    "AND day = ? ORDER BY ts DESC, seq DESC LIMIT ?",
    "letter_by_source": "SELECT id, received_at, reason, payload, kind FROM {ks}.dead_letters "
    "WHERE source = ?",
    "add_letter": "INSERT INTO {ks}.dead_letters (source, id, received_at, reason, payload, kind) "
    "VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "index_letter": "INSERT INTO {ks}.dead_letters_by_day "
    "(day, received_at, id, source, reason, payload, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "letters_of_day": "SELECT id, received_at, source, reason, payload, kind "
    "FROM {ks}.dead_letters_by_day WHERE day = ? LIMIT ?",
    "count_letters": "SELECT count(*) FROM {ks}.dead_letters_by_day WHERE day = ?",
    "letter_keys_of_day": "SELECT received_at, id, source FROM {ks}.dead_letters_by_day "
    "WHERE day = ?",
    "drop_letter": "DELETE FROM {ks}.dead_letters WHERE source = ?",
    "unindex_letter": "DELETE FROM {ks}.dead_letters_by_day WHERE day = ? AND received_at = ? "
    "AND id = ?",
    "drop_bucket": "DELETE FROM {ks}.buckets WHERE kind = ? AND owner = ? AND bucket = ?",
    "last_id": "SELECT value FROM {ks}.sequences WHERE name = ?",
    "first_ids": "INSERT INTO {ks}.sequences (name, value) VALUES (?, ?) IF NOT EXISTS",
    "more_ids": "UPDATE {ks}.sequences SET value = ? WHERE name = ? IF value = ?",
    "add_fault": "INSERT INTO {ks}.fault_labels (day, start_ts, station_id, sensor, kind, end_ts) "
    "VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "faults_of_day": "SELECT start_ts, station_id, sensor, kind, end_ts FROM {ks}.fault_labels "
    "WHERE day = ? AND start_ts < ?",
    "add_global_anomaly": "INSERT INTO {ks}.global_anomalies "
    "(day, station_id, sensor, minute, value, expected, score) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "global_anomalies_of_day": "SELECT day, station_id, sensor, minute, value, expected, score "
    "FROM {ks}.global_anomalies WHERE day = ?",
    "station_global_anomalies_of_day": "SELECT day, station_id, sensor, minute, value, "
    "expected, score FROM {ks}.global_anomalies WHERE day = ? AND station_id = ?",
    "global_anomaly_run_written": "SELECT WRITETIME(run_status) FROM {ks}.global_anomalies "
    "WHERE day = ? LIMIT 1",
    "clear_global_anomalies": "DELETE FROM {ks}.global_anomalies USING TIMESTAMP ? "
    "WHERE day = ? AND station_id >= ''",
    "put_global_anomaly": "INSERT INTO {ks}.global_anomalies "
    "(day, station_id, sensor, minute, value, expected, score) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "USING TIMESTAMP ?",
    "put_global_anomaly_run": "UPDATE {ks}.global_anomalies USING TIMESTAMP ? SET "
    "run_started = ?, run_finished = ?, run_status = ?, run_series = ?, run_skipped = ?, "
    "run_anomalies = ?, run_error = ? WHERE day = ?",
    "first_checkpoint": "INSERT INTO {ks}.checkpoints (consumer_group, topic, log_partition, "
    "log_offset, state, written_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "next_checkpoint": "UPDATE {ks}.checkpoints SET log_offset = ?, state = ?, written_at = ? "
    "WHERE consumer_group = ? AND topic = ? AND log_partition = ? IF log_offset <= ?",
    "checkpoints": "SELECT consumer_group, topic, log_partition, log_offset, state, written_at "
    "FROM {ks}.checkpoints WHERE consumer_group = ? AND topic = ?",
    "global_anomaly_run_of_day": "SELECT day, run_started, run_finished, run_status, "
    "run_series, run_skipped, run_anomalies, run_error FROM {ks}.global_anomalies "
    "WHERE day = ? LIMIT 1",
    "alarm_by_key": f"SELECT {_LOGGED} FROM {{ks}}.alarm_log WHERE key = ?",
    "first_alarm_log": f"INSERT INTO {{ks}}.alarm_log (key, {_LOGGED}) "
    f"VALUES ({', '.join('?' * 14)}) IF NOT EXISTS",
    "add_alarm_history": f"INSERT INTO {{ks}}.alarm_history (alarm_id, rank, key, {_LOGGED}) "
    f"VALUES ({', '.join('?' * 16)})",
    "alarm_history": f"SELECT {_LOGGED} FROM {{ks}}.alarm_history WHERE alarm_id = ?",
    "add_alarm_day": f"INSERT INTO {{ks}}.alarm_days (day, key, {_TRANSITION}) "
    f"VALUES ({', '.join('?' * 14)})",
    "alarm_days_in_range": f"SELECT {_TRANSITION} FROM {{ks}}.alarm_days WHERE day = ? "
    "AND ts >= ? AND ts < ?",
    "add_alarm_feed": f"INSERT INTO {{ks}}.alarm_feed (bucket, key, {_LOGGED}) "
    f"VALUES ({', '.join('?' * 15)})",
    "alarm_feed": f"SELECT {_LOGGED} FROM {{ks}}.alarm_feed WHERE bucket = ?",
    "alarm_feed_after": f"SELECT {_LOGGED} FROM {{ks}}.alarm_feed WHERE bucket = ? "
    "AND (recorded_at, key) > (?, ?)",
    "set_condition": f"UPDATE {{ks}}.alarms USING TIMESTAMP ? SET condition = ? WHERE {_ALARM}",
    "set_ack": f"UPDATE {{ks}}.alarms USING TIMESTAMP ? SET ack = ? WHERE {_ALARM}",
    "set_shelving": f"UPDATE {{ks}}.alarms USING TIMESTAMP ? SET shelving = ? WHERE {_ALARM}",
    "alarm_row": f"SELECT {_ALARM_ROW} FROM {{ks}}.alarms WHERE {_ALARM}",
    "alarms_of_shard": f"SELECT {_ALARM_ROW} FROM {{ks}}.alarms WHERE shard = ?",
    "alarms_of_station": f"SELECT {_ALARM_ROW} FROM {{ks}}.alarms WHERE shard = ? "
    "AND station_id = ?",
}

_Key = tuple[str, int]  # a readings partition: (station_id, day)
_Minutes = dict[int, dict[str, Partial]]  # minute -> sensor -> its aggregate


@dataclass(frozen=True)
class _Pending:
    """What is still to be written into one readings partition, and the counts and minute
    aggregates (of the minutes the batch touches) it holds now."""

    count: int | None  # None: the partition holds nothing yet
    anomalies: int
    positions: list[int]  # rows of the batch, all of them new to the partition
    minutes: _Minutes


class CassandraStore(Store):
    """A Store in one Cassandra keyspace; safe for any number of threads, and of processes
    writing the same keyspace."""

    # No transaction spans partitions: see "What is not atomic" in the module docstring.
    atomicity = Atomicity.PARTITION

    def __init__(self, url: str) -> None:
        self.options: CassandraOptions = parse_url(url)
        o = self.options
        self.where = f"cassandra://{','.join(o.hosts)}:{o.port}/{o.keyspace}"
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._cluster = cluster(o)  # refuses host names that do not resolve
        except _ERRORS as exc:
            raise StoreError(f"cannot open {self.where}: {exc}") from exc
        try:
            self._session = self._cluster.connect()
            migrate(self._session, o)
            self._cql = {
                name: self._session.prepare(text.format(ks=o.keyspace))
                for name, text in _CQL.items()
            }
        except BaseException as exc:
            self._cluster.shutdown()
            if isinstance(exc, _ERRORS):
                raise StoreError(f"cannot open {self.where} as a Faultline store: {exc}") from exc
            raise
        self._handlers: dict[type[Any], Callable[[Any], Any]] = {
            LatestAnomalies: self._latest_anomalies,
            AnomalyCount: self._anomaly_count,
            StationReadings: self._station_readings,
            Stations: self._stations,
            DeadLetters: self._dead_letters,
            DeadLetterCount: self._dead_letter_count,
            FaultLabels: self._fault_labels,
            RecentReadings: self._recent_readings,
            MinuteAggregates: self._minute_aggregates,
            GlobalAnomalies: self._global_anomalies,
            GlobalAnomalyRuns: self._global_anomaly_runs,
            Checkpoints: self._checkpoints,
            Alarms: self._alarms,
            AlarmHistory: self._alarm_history,
            AlarmTransitions: self._alarm_transitions,
            TransitionFeed: self._transition_feed,
        }

    def write(self, batch: WriteBatch) -> None:
        valid = validate(batch)
        columns, letters, anomalies, run = valid.columns, valid.letters, valid.anomalies, valid.run
        readings = encode_readings(columns)
        checkpoints = checkpoint_rows(batch.checkpoints)
        self._check_open()
        try:
            if readings:
                self._write_readings(columns, readings, int(batch.processed_at))
            if letters:
                self._write_dead_letters(letters)
            if batch.faults:
                self._write_faults(batch.faults)
            if run is not None:
                self._write_global_anomaly_run(run, anomalies)
            elif anomalies:
                self._run("add_bucket", {(_GLOBAL_ANOMALIES, "", row[0]) for row in anomalies})
                self._run("add_global_anomaly", anomalies)
            if valid.transitions:
                self._write_alarm_transitions(valid.transitions, int(batch.processed_at))
            # Last, once everything they cover is stored: see _write_checkpoints.
            if checkpoints:
                self._write_checkpoints(checkpoints)
        except _ERRORS as exc:
            raise StoreError(f"write failed, part of the batch may be stored: {exc}") from exc

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        """Walk the letters' keys newest first, day by day, and delete those past the count or
        the age: each letter's home row first, then its index row, so that a pass failing
        halfway leaves the index pointing at what is left to delete, and the next pass
        finishes it. A day left empty leaves the days list."""
        self._check_open()
        cutoff = retention.cutoff_ms(now_ms)
        kept = gone = 0
        try:
            for day in self._days(_DEAD_LETTERS, "", newest_first=True):
                doomed = []
                keys = self._session.execute(self._cql["letter_keys_of_day"], (day,))
                for received_at, letter_id, source in keys:  # paged: never all at once
                    if received_at >= cutoff and kept < retention.max_count:
                        kept += 1
                    else:
                        doomed.append((received_at, letter_id, source))
                if not doomed:
                    continue
                self._run("drop_letter", [(source,) for *_, source in doomed])
                self._run("unindex_letter", [(day, r, i) for r, i, _ in doomed])
                if self._session.execute(self._cql["count_letters"], (day,)).one()[0] == 0:
                    self._run("drop_bucket", [(_DEAD_LETTERS, "", day)])
                gone += len(doomed)
        except _ERRORS as exc:
            raise StoreError(f"expiring dead letters failed after {gone}: {exc}") from exc
        return gone

    def query(self, q: Query[R]) -> R:
        handler = self._handlers.get(type(q))
        if handler is None:
            raise TypeError(f"{type(self).__name__} cannot answer {type(q).__name__}")
        self._check_open()
        try:
            return cast(R, handler(q))
        except _ERRORS as exc:
            raise StoreError(f"{type(q).__name__} failed: {exc}") from exc

    def ping(self) -> None:
        self._check_open()
        try:
            # The session's default timeout is 10 s: a health check must answer sooner.
            self._session.execute(
                "SELECT release_version FROM system.local", timeout=PING_TIMEOUT_S
            )
        except _ERRORS as exc:
            raise StoreError(f"{self.where} does not answer: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cluster.shutdown()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # Writing

    def _write_readings(
        self, columns: BatchColumns, readings: EncodedReadings, processed_at: int
    ) -> None:
        days = [ts // DAY_MS for ts in readings.ts]
        partitions: dict[_Key, list[int]] = {}
        for i, key in enumerate(zip(readings.station_id, days, strict=True)):
            partitions.setdefault(key, []).append(i)
        anomalous = [i for i, flag in enumerate(readings.is_anomaly) if flag]
        self._run("add_station", {(station,) for station, _ in partitions})
        self._run(
            "add_bucket",
            {(_READINGS, station, day) for station, day in partitions}
            | {(_ANOMALIES, "", days[i]) for i in anomalous}
            | {(_STATION_ANOMALIES, readings.station_id[i], days[i]) for i in anomalous},
        )
        pending = self._still_new(readings, partitions, self.options.consistency)
        new_anomalies = [
            _row(readings, days, i, processed_at)
            for p in pending.values()
            for i in p.positions
            if readings.is_anomaly[i]
        ]
        self._run("add_anomaly", new_anomalies)
        self._run("add_station_anomaly", new_anomalies)
        self._commit_readings(columns, readings, days, pending, processed_at)

    def _still_new(
        self, readings: EncodedReadings, partitions: dict[_Key, list[int]], consistency: int
    ) -> dict[_Key, _Pending]:
        """Each partition's rows not stored yet, with its counts (partitions with none left out)."""
        keys = list(partitions)
        ranges = []
        for station, day in keys:
            ts = [readings.ts[i] for i in partitions[(station, day)]]
            ranges.append((station, day, min(ts), max(ts)))
        minutes = [
            (first - first % MINUTE_MS, last - last % MINUTE_MS) for *_, first, last in ranges
        ]
        # Counts first, keys after: a write committed between the two reads changed the count,
        # so the condition on it fails and the rows are looked at again. Read the other way
        # round (or at once), keys from before such a write could pass with a count from after
        # it, and its rows would be counted twice.
        counts = self._run(
            "partition_count",
            [(*span, *key) for span, key in zip(minutes, keys, strict=True)],
            consistency=consistency,
        )
        stored = self._run("keys_in_range", ranges, consistency=consistency)
        pending = {}
        for key, found, count in zip(keys, stored, counts, strict=True):
            present = set(found)
            fresh = [i for i in partitions[key] if (readings.ts[i], readings.seq[i]) not in present]
            if fresh:
                row = count.one()
                n, a = (None, 0) if row is None or row[0] is None else (row[0], row[1] or 0)
                pending[key] = _Pending(n, a, fresh, _minutes(None if row is None else row[2]))
        return pending

    def _commit_readings(
        self,
        columns: BatchColumns,
        readings: EncodedReadings,
        days: list[int],
        pending: dict[_Key, _Pending],
        processed_at: int,
    ) -> None:
        """Insert the pending rows, a chunk per partition at a time, all partitions at once."""
        lost_in_a_row = 0
        while pending:
            keys = list(pending)
            chunks = [pending[key].positions[:_CHUNK_ROWS] for key in keys]
            partials = _partials_by_partition(columns, chunks)
            batches = [
                self._conditional_batch(
                    readings, days, key, pending[key], chunk, processed_at, partials.get(key, {})
                )
                for key, chunk in zip(keys, chunks, strict=True)
            ]
            results = self._execute_all([(batch, None) for batch in batches])
            lost: dict[_Key, list[int]] = {}
            for key, batch, result in zip(keys, batches, results, strict=True):
                state = pending.pop(key)
                if not _applied(result):
                    lost[key] = state.positions
                    continue
                rest = state.positions[_CHUNK_ROWS:]
                if rest:
                    minutes = {**state.minutes, **batch.minutes}
                    pending[key] = _Pending(batch.count, batch.anomalies, rest, minutes)
            if lost:
                lost_in_a_row += 1
                if lost_in_a_row > _RETRIES:
                    raise StoreError(
                        f"write failed: other writers kept changing {len(lost)} partitions "
                        f"({_RETRIES} tries); part of the batch may be stored"
                    )
                # SERIAL reads see what the winners of the race committed.
                pending.update(self._still_new(readings, lost, self.options.serial_consistency))
            else:
                lost_in_a_row = 0

    def _conditional_batch(
        self,
        readings: EncodedReadings,
        days: list[int],
        key: _Key,
        state: _Pending,
        chunk: list[int],
        processed_at: int,
        partials: _Minutes,
    ) -> _CountingBatch:
        batch = _CountingBatch(
            count=(state.count or 0) + len(chunk),
            anomalies=state.anomalies + sum(readings.is_anomaly[i] for i in chunk),
            minutes={
                minute: {
                    **state.minutes.get(minute, {}),
                    **{
                        sensor: merge_partial(state.minutes.get(minute, {}).get(sensor), partial)
                        for sensor, partial in sensors.items()
                    },
                }
                for minute, sensors in partials.items()
            },
        )
        insert = self._cql["add_reading"]
        for i in chunk:
            batch.add(insert, _row(readings, days, i, processed_at))
        batch.add(
            self._cql["set_counts"],
            (batch.count, batch.anomalies, batch.minutes, *key, state.count),
        )
        return batch

    def _write_dead_letters(self, letters: Sequence[tuple[int, str, str, bytes, str]]) -> None:
        first: dict[str, tuple[int, str, bytes, str]] = {}
        for received, source, reason, payload, kind in letters:
            first.setdefault(source, (received, reason, payload, kind))  # the first one wins
        sources = list(first)
        known = self._stored_letters(sources)
        new = [source for source in sources if source not in known]
        if new:
            first_id = self._next_ids(len(new))
            self._run(
                "add_letter",
                [(source, first_id + k, *first[source]) for k, source in enumerate(new)],
            )
            # A letter that lost an IF NOT EXISTS race is stored as the winner wrote it.
            known.update(self._stored_letters(new))
        stored = [(source, *known[source]) for source in sources]
        self._run("add_bucket", {(_DEAD_LETTERS, "", row[2] // DAY_MS) for row in stored})
        self._run(
            "index_letter",
            [
                (received // DAY_MS, received, letter_id, source, reason, payload, kind)
                for source, letter_id, received, reason, payload, kind in stored
            ],
        )

    def _stored_letters(self, sources: list[str]) -> dict[str, tuple[Any, ...]]:
        """(id, received_at, reason, payload, kind) of those of `sources` that are stored."""
        results = self._run("letter_by_source", [(source,) for source in sources])
        found = {}
        for source, result in zip(sources, results, strict=True):
            row = result.one()
            if row is not None:
                found[source] = tuple(row)
        return found

    def _next_ids(self, n: int) -> int:
        """Reserve n dead letter ids; the first of them (they increase in the order stored)."""
        serial = self.options.serial_consistency
        for _ in range(_RETRIES):
            last = self._run("last_id", [(_LETTER_IDS,)], consistency=serial)[0].one()
            if last is None:
                if _applied(self._run("first_ids", [(_LETTER_IDS, n)])[0]):
                    return 1
            elif _applied(self._run("more_ids", [(last[0] + n, _LETTER_IDS, last[0])])[0]):
                return int(last[0]) + 1
        raise StoreError(f"write failed: no dead letter ids after {_RETRIES} tries")

    def _write_faults(self, faults: Sequence[FaultLabel]) -> None:
        # A label's end is written with its end as the cell's write timestamp, and Cassandra
        # keeps the cell with the highest timestamp: the latest end wins whatever order writers
        # and replays arrive in, without reading first.
        rows = []
        for f in faults:
            label = (f.start_ts, f.station_id, f.sensor, f.kind, f.end_ts, f.end_ts)
            rows.append((f.start_ts // DAY_MS, *label))
            if f.end_ts - f.start_ts >= DAY_MS:
                rows.append((LONG_FAULTS, *label))
        self._run("add_bucket", {(_FAULTS, "", f.start_ts // DAY_MS) for f in faults})
        self._run("add_fault", rows)

    def _write_checkpoints(self, rows: list[CheckpointRow]) -> None:
        """Put each checkpoint unless a higher offset is stored, by lightweight transactions.

        Not atomic with the batch: there is no transaction across partitions. It is written only
        after every other part of the batch succeeded, so a stored checkpoint never covers
        readings that are not stored; a write failing before it leaves the previous checkpoint,
        and the engine, which acknowledges nothing it has not checkpointed, writes the batch and
        its checkpoint again. The condition keeps a late retry of an older batch from moving the
        state back, even when several engines race.
        """
        for group, topic, partition, offset, state, written_at in rows:
            for _ in range(_RETRIES):
                moved = self._run(
                    "next_checkpoint",
                    [(offset, state, written_at, group, topic, partition, offset)],
                )[0].one()
                # Applied, or refused by a stored higher offset (a missing row has no columns).
                if moved[0] or len(moved) > 1:
                    break
                first = (group, topic, partition, offset, state, written_at)
                if _applied(self._run("first_checkpoint", [first])[0]):
                    break
            else:
                raise StoreError(f"write failed: checkpoint not stored after {_RETRIES} tries")

    def _write_alarm_transitions(
        self, transitions: Sequence[AlarmTransition], processed_at: int
    ) -> None:
        """Log the transitions and fold them into their alarms' rows (see "Alarms" in the
        module docstring): the log by key first, then the index of days, then the other copies
        of the log, then the rows, each partition's share in one batch, the partitions at
        once."""
        alarms = sorted({t.alarm for t in transitions}, key=lambda a: a.id)
        found = self._execute_all(
            [(self._cql["alarm_by_key"], (t.key,)) for t in transitions]
            + [(self._cql["alarm_row"], _alarm_at(a)) for a in alarms]
        )
        logged, rows = found[: len(transitions)], found[len(transitions) :]
        recorded = self._first_records(transitions, logged, processed_at)
        buckets: set[tuple[str, str, int]] = set()
        copies: list[tuple[Any, Any, tuple[Any, ...]]] = []
        history, day, feed = (self._cql[f"add_alarm_{copy}"] for copy in ("history", "day", "feed"))
        for r in recorded:
            t, at, fields = r.transition, r.recorded_at, _fields(r.transition)
            buckets |= {(_ALARM_DAYS, "", t.ts // DAY_MS), (_ALARM_FEED, "", at // DAY_MS)}
            # Partitions named with their table, so that each batch stays in one.
            rank, alarm_id = action_rank(t.action), t.alarm.id
            copies.append((("h", alarm_id), history, (alarm_id, rank, t.key, *fields, at)))
            copies.append((("d", t.ts // DAY_MS), day, (t.ts // DAY_MS, t.key, *fields)))
            copies.append((("f", at // DAY_MS), feed, (at // DAY_MS, t.key, *fields, at)))
        self._run("add_bucket", buckets)
        self._in_batches(copies)
        stored = {
            a: None if (row := result.one()) is None else _stored_alarm(row)
            for a, result in zip(alarms, rows, strict=True)
        }
        self._in_batches(self._fold(stored, [r.transition for r in recorded]))

    def _first_records(
        self, transitions: Sequence[AlarmTransition], logged: list[ResultSet], processed_at: int
    ) -> list[RecordedTransition]:
        """Each transition as the log records it: as stored, when the log holds its key
        (`logged`: the reads of the keys); else as this write or a racing one stores it now,
        whichever an INSERT ... IF NOT EXISTS lets through first."""
        recorded = [None if (row := r.one()) is None else _recorded(row) for r in logged]
        new = [i for i, r in enumerate(recorded) if r is None]
        firsts = self._run(
            "first_alarm_log",
            [(transitions[i].key, *_fields(transitions[i]), processed_at) for i in new],
        )
        for i, result in zip(new, firsts, strict=True):
            row = result.one()
            if row[0]:
                recorded[i] = RecordedTransition(transitions[i], processed_at)
            else:  # a racing write came first: the row it stored follows [applied]
                stored = dict(zip(result.column_names, row, strict=True))
                recorded[i] = _recorded([stored[name] for name in _LOGGED_NAMES])
        return [r for r in recorded if r is not None]

    def _fold(
        self, stored: dict[AlarmKey, StoredAlarm | None], transitions: list[AlarmTransition]
    ) -> list[tuple[Any, Any, tuple[Any, ...]]]:
        """The updates of the alarms' rows that fold `transitions` in, as (partition,
        statement, parameters): each alarm's in history order, taken as faultline.store.
        alarm_rows takes them from the row as read (`stored`), and each part a transition
        changes written at the write timestamp of that transition's place in the part's order
        (see "Alarms" in the module docstring)."""
        updates = []
        for t in sorted(transitions, key=lambda t: (t.alarm.id, history_order(t))):
            row = take(stored[t.alarm], t)
            if row is None:
                continue  # a comment, or older than the part the row holds
            stored[t.alarm] = row
            c, o, rank = row.state.condition, row.state.operator, action_rank(t.action)
            part: list[Any]
            if t.action in ACTION_RANK:
                shares = _shares_list(c.sensors)
                part = [t.ts, rank, c.active, c.activation_ts, c.cleared_ts, c.severity, shares]
                name, at = "set_condition", t.ts * 1000 + rank
            elif t.action == "ack":
                part = [o.acked_activation, o.acked_by, o.acked_at]
                name, at = "set_ack", t.activation_ts * 1000
            else:
                part, name, at = [o.shelved_until, o.shelved_by, t.ts], "set_shelving", t.ts * 1000
            shard, *_ = where = _alarm_at(t.alarm)
            updates.append((shard, self._cql[name], (at, _part(t, part), *where)))
        return updates

    def _in_batches(self, statements: Iterable[tuple[Any, Any, tuple[Any, ...]]]) -> None:
        """Run (partition, statement, parameters) triples, those of one partition as one
        unlogged batch (atomic and isolated in Cassandra), the partitions concurrently."""
        batches: dict[Any, BatchStatement] = {}
        for partition, statement, parameters in statements:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = BatchStatement(batch_type=BatchType.UNLOGGED)
            batch.add(statement, parameters)
        self._execute_all([(batch, None) for batch in batches.values()])

    def _write_global_anomaly_run(
        self, run: GlobalAnomalyRunRow, anomalies: list[GlobalAnomalyRow]
    ) -> None:
        """The run's record and, when it succeeded, its results in place of the day's (see the
        module docstring for what readers see)."""
        day = run[0]
        self._run("add_bucket", [(_GLOBAL_ANOMALIES, "", day)])
        stored = self._session.execute(self._cql["global_anomaly_run_written"], (day,)).one()
        previous = _MIN if stored is None or stored[0] is None else stored[0]
        stamp = max(time.time_ns() // 1000, previous + 2)
        record = self._cql["put_global_anomaly_run"].bind((stamp, *run[1:], day))
        if run[3] != RUN_SUCCEEDED:
            self._session.execute(record)
            return
        chunks = [
            anomalies[i : i + _GLOBAL_ANOMALY_ROWS]
            for i in range(0, len(anomalies), _GLOBAL_ANOMALY_ROWS)
        ] or [[]]
        for i, chunk in enumerate(chunks):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            if i == 0:
                batch.add(self._cql["clear_global_anomalies"], (stamp - 1, day))
            for anomaly in chunk:
                batch.add(self._cql["put_global_anomaly"], (*anomaly, stamp))
            if i == len(chunks) - 1:
                batch.add(record)
            self._session.execute(batch)

    # Reading

    def _days(
        self, kind: str, owner: str, first: int = _MIN, last: int = _MAX, *, newest_first: bool
    ) -> list[int]:
        """The days of a series that hold anything, between first and last (both included)."""
        statement = self._cql["days_desc" if newest_first else "days_asc"]
        return [row[0] for row in self._session.execute(statement, (kind, owner, first, last))]

    def _until(self, name: str, key: tuple[Any, ...], days: Iterable[int], limit: int) -> list[Any]:
        """Rows of `name` (which ends in `day = ? LIMIT ?`) day after day, until `limit`."""
        rows: list[Any] = []
        for day in days:
            rows += self._session.execute(self._cql[name], (*key, day, limit - len(rows)))
            if len(rows) >= limit:
                break
        return rows

    def _latest_anomalies(self, q: LatestAnomalies) -> list[ReadingRow]:
        if q.station_id is None:
            days = self._days(_ANOMALIES, "", newest_first=True)
            rows = self._until("anomalies_of_day", (), days, q.limit)
        else:
            days = self._days(_STATION_ANOMALIES, q.station_id, newest_first=True)
            rows = self._until("station_anomalies_of_day", (q.station_id,), days, q.limit)
        return [decode_reading(*row) for row in rows]

    def _anomaly_count(self, q: AnomalyCount) -> int:
        if q.end_ms <= q.start_ms:
            return 0
        first, last = q.start_ms // DAY_MS, (q.end_ms - 1) // DAY_MS
        days = self._days(_ANOMALIES, "", first, last, newest_first=False)
        counts = self._run("count_anomalies", [(day, q.start_ms, q.end_ms) for day in days])
        return sum(result.one()[0] for result in counts)

    def _station_readings(self, q: StationReadings) -> ReadingPage:
        after = q.after if q.after is not None and q.after[0] >= q.start_ms else None
        lower = q.start_ms if after is None else after[0]
        want = q.limit + 1  # one more tells whether a page follows
        rows: list[Any] = []
        if lower < q.end_ms:
            first, last = lower // DAY_MS, (q.end_ms - 1) // DAY_MS
            for day in self._days(_READINGS, q.station_id, first, last, newest_first=False):
                if after is None:
                    params: tuple[Any, ...] = (q.station_id, day, q.start_ms, q.end_ms)
                    name = "readings_from"
                else:
                    params, name = (q.station_id, day, *after, q.end_ms), "readings_after"
                rows += self._session.execute(self._cql[name], (*params, want - len(rows)))
                if len(rows) >= want:
                    break
        page = [decode_reading(*row) for row in rows[: q.limit]]
        more = len(rows) > q.limit
        return ReadingPage(rows=page, next_cursor=(page[-1].ts, page[-1].seq) if more else None)

    def _station_days(self) -> tuple[list[str], list[list[int]]]:
        """Every station, and the days its readings are in, newest first."""
        stations = [row[0] for row in self._session.execute(self._cql["station_ids"])]
        found = self._run("days_desc", [(_READINGS, station, _MIN, _MAX) for station in stations])
        return stations, [[row[0] for row in result] for result in found]

    def _stations(self, _q: Stations) -> list[StationSummary]:
        stations, days = self._station_days()
        listed = [(s, d) for s, d in zip(stations, days, strict=True) if d]
        counted = self._run("partition_counts", listed)
        totals = []
        for (station, _), result in zip(listed, counted, strict=True):
            per_day = {day: (n or 0, a or 0) for day, n, a in result}
            filled = [day for day, (n, _) in per_day.items() if n]
            if filled:  # else a write failed before its first reading was stored
                n, a = (sum(c) for c in zip(*per_day.values(), strict=True))
                totals.append((station, max(filled), n, a))
        newest = self._run("newest_reading", [(station, day) for station, day, _, _ in totals])
        summaries = []
        for (station, _, n, a), result in zip(totals, newest, strict=True):
            latest = decode_reading(*result.one())
            summaries.append(
                StationSummary(
                    station_id=station,
                    last_ts=latest.ts,
                    last_received_at=latest.received_at,
                    last_values=latest.values,
                    last_is_anomaly=latest.is_anomaly,
                    readings=n,
                    anomalies=a,
                )
            )
        return summaries

    def _recent_readings(self, q: RecentReadings) -> pd.DataFrame:
        """Each station's readings newest first, merged: only as many pages of each station are
        read as the merge consumes."""
        stations, days = self._station_days()
        fetch = min(q.limit, 1000)

        def newest_first(station: str, station_days: list[int]) -> Iterator[tuple[Any, ...]]:
            for day in station_days:
                statement = self._cql["recent_of_day"].bind((station, day, q.limit))
                statement.fetch_size = fetch
                for ts, seq, values in self._session.execute(statement):
                    yield ts, station, seq, values

        merged = heapq.merge(
            *(newest_first(s, d) for s, d in zip(stations, days, strict=True)),
            key=lambda row: row[:3],
            reverse=True,
        )
        rows = list(itertools.islice(merged, q.limit))
        rows.reverse()
        return recent_frame(
            [r[1] for r in rows], [r[0] for r in rows], [json.loads(r[3]) for r in rows], q.sensors
        )

    def _dead_letters(self, q: DeadLetters) -> list[DeadLetterRow]:
        days = self._days(_DEAD_LETTERS, "", newest_first=True)
        return [DeadLetterRow(*row) for row in self._until("letters_of_day", (), days, q.limit)]

    def _dead_letter_count(self, _q: DeadLetterCount) -> int:
        days = self._days(_DEAD_LETTERS, "", newest_first=True)
        return sum(result.one()[0] for result in self._run("count_letters", [(d,) for d in days]))

    def _fault_labels(self, q: FaultLabels) -> list[FaultLabel]:
        # A label shorter than a day that reaches start_ms started less than a day before it.
        first, last = (q.start_ms - DAY_MS) // DAY_MS, (q.end_ms - 1) // DAY_MS
        days = self._days(_FAULTS, "", first, last, newest_first=False) if first <= last else []
        results = self._run("faults_of_day", [(day, q.end_ms) for day in [*days, LONG_FAULTS]])
        ends: dict[tuple[int, str, str, str], int] = {}
        for result in results:
            for start, station, sensor, kind, end in result:
                if end >= q.start_ms and q.station_id in (None, station):
                    key = (start, station, sensor, kind)
                    ends[key] = max(end, ends.get(key, end))
        return [
            FaultLabel(station, sensor, kind, start, end)
            for (start, station, sensor, kind), end in sorted(ends.items())
        ]

    def _minute_aggregates(self, q: MinuteAggregates) -> pd.DataFrame:
        if q.end_ms <= q.start_ms:
            return aggregate_frame([])
        first, last = q.start_ms // DAY_MS, (q.end_ms - 1) // DAY_MS
        stations = (
            [q.station_id]
            if q.station_id is not None
            else [row[0] for row in self._session.execute(self._cql["station_ids"])]
        )
        found = self._run("days_asc", [(_READINGS, station, first, last) for station in stations])
        keys = [
            (station, row[0])
            for station, result in zip(stations, found, strict=True)
            for row in result
        ]
        # A map slice includes both bounds: the minutes starting in [start_ms, end_ms).
        span = (q.start_ms, q.end_ms - 1)
        results = self._run("minutes_of_day", [(*span, *key) for key in keys])
        rows = []
        for (station, _), result in zip(keys, results, strict=True):
            row = result.one()
            for minute, sensors in _minutes(None if row is None else row[0]).items():
                for sensor, partial in sensors.items():
                    if q.sensor in (None, sensor):
                        rows.append((station, sensor, minute, *partial))
        return aggregate_frame(rows)

    def _global_anomalies(self, q: GlobalAnomalies) -> list[GlobalAnomaly]:
        first, last = (day_number(day) for day in q.days)
        days = self._days(_GLOBAL_ANOMALIES, "", first, last, newest_first=False)
        if q.station_id is None:
            results = self._run("global_anomalies_of_day", [(day,) for day in days])
        else:
            params = [(day, q.station_id) for day in days]
            results = self._run("station_global_anomalies_of_day", params)
        # A day's partition with a run record but no anomalies reads as one row of nulls.
        return [global_anomaly(row) for result in results for row in result if row[1] is not None]

    def _checkpoints(self, q: Checkpoints) -> list[Checkpoint]:
        rows = self._run("checkpoints", [(q.group, q.topic)])[0]
        return [checkpoint(row) for row in rows]

    def _global_anomaly_runs(self, q: GlobalAnomalyRuns) -> list[GlobalAnomalyRun]:
        first, last = (day_number(day) for day in q.days)
        days = self._days(_GLOBAL_ANOMALIES, "", first, last, newest_first=False)
        runs = []
        for result in self._run("global_anomaly_run_of_day", [(day,) for day in days]):
            row = result.one()
            if row is not None and row[3] is not None:  # else anomalies written without a run
                day, started, finished, status, series, skipped, found, error = row
                runs.append(
                    global_anomaly_run(
                        (day, started, finished, status, series, dict(skipped), found, error)
                    )
                )
        return runs

    def _alarms(self, q: Alarms) -> AlarmPage:
        """Every row of the shards asked about (all ALARM_SHARDS, or the station's one),
        filtered and sorted here: see "Alarms" in the module docstring for the bound."""
        if q.station_id is None:
            results = self._run("alarms_of_shard", [(shard,) for shard in range(ALARM_SHARDS)])
        else:
            results = self._run("alarms_of_station", [(_shard(q.station_id), q.station_id)])
        return _alarm_page([_stored_alarm(row).row() for result in results for row in result], q)

    def _alarm_history(self, q: AlarmHistory) -> list[RecordedTransition]:
        return [_recorded(row) for row in self._run("alarm_history", [(q.alarm_id,)])[0]]

    def _alarm_transitions(self, q: AlarmTransitions) -> list[AlarmTransition]:
        if q.end_ms <= q.start_ms:
            return []
        first, last = q.start_ms // DAY_MS, (q.end_ms - 1) // DAY_MS
        days = self._days(_ALARM_DAYS, "", first, last, newest_first=False)
        results = self._run("alarm_days_in_range", [(day, q.start_ms, q.end_ms) for day in days])
        found = (_transition(row) for result in results for row in result)
        return [t for t in found if not q.actions or t.action in q.actions]

    def _transition_feed(self, q: TransitionFeed) -> list[RecordedTransition]:
        """The feed's days from the cursor's on, each from the cursor on, until the limit."""
        first = _MIN if q.after is None else q.after[0] // DAY_MS
        found: list[RecordedTransition] = []
        for bucket in self._days(_ALARM_FEED, "", first, newest_first=False):
            if q.after is not None and bucket == first:
                params: tuple[Any, ...] = (bucket, *q.after)
                name = "alarm_feed_after"
            else:
                params, name = (bucket,), "alarm_feed"
            statement = self._cql[name].bind(params)
            statement.fetch_size = min(q.limit, 1000)
            rows = self._session.execute(statement)
            found += (_recorded(row) for row in itertools.islice(rows, q.limit - len(found)))
            if len(found) >= q.limit:
                break
        return found

    # Running statements

    def _run(
        self, name: str, rows: Iterable[tuple[Any, ...]], *, consistency: int | None = None
    ) -> list[ResultSet]:
        """Run the prepared statement `name` once per parameter tuple, concurrently."""
        statement = self._cql[name]
        if consistency is None:
            return self._execute_all([(statement, row) for row in rows])
        bound = []
        for row in rows:
            one = statement.bind(row)
            one.consistency_level = consistency
            bound.append((one, None))
        return self._execute_all(bound)

    def _execute_all(self, work: list[tuple[Any, Any]]) -> list[ResultSet]:
        if not work:
            return []
        return [
            result
            for _, result in execute_concurrent(self._session, work, raise_on_first_error=True)
        ]


class _CountingBatch(BatchStatement):
    """A conditional batch on one readings partition, with the counts and minutes it sets."""

    def __init__(self, count: int, anomalies: int, minutes: _Minutes) -> None:
        super().__init__(batch_type=BatchType.UNLOGGED)
        self.count = count
        self.anomalies = anomalies
        self.minutes = minutes


def _minutes(
    stored: Mapping[int, Mapping[str, tuple[int, float, float, float]]] | None,
) -> _Minutes:
    """A partition's `minutes` map as read (None when empty) as plain dicts."""
    if stored is None:
        return {}
    return {
        minute: {
            sensor: (int(count), float(total), float(low), float(high))
            for sensor, (count, total, low, high) in sensors.items()
        }
        for minute, sensors in stored.items()
    }


def _partials_by_partition(columns: BatchColumns, chunks: list[list[int]]) -> dict[_Key, _Minutes]:
    """The minute partials of the rows in `chunks`, by the readings partition they go to.

    One pass over all chunks: each chunk is a different partition, and a partition is one
    station's day, so grouping by station and minute keeps every chunk apart.
    """
    picked = np.zeros(len(columns), bool)
    for chunk in chunks:
        picked[chunk] = True
    found: dict[_Key, _Minutes] = {}
    rows = partial_rows(columns.minute_partials(picked))
    for station, sensor, minute, count, total, low, high in rows:
        minutes = found.setdefault((station, minute // DAY_MS), {})
        minutes.setdefault(minute, {})[sensor] = (count, total, low, high)
    return found


def _row(readings: EncodedReadings, days: list[int], i: int, processed_at: int) -> tuple[Any, ...]:
    """Reading i as the parameters of add_reading (and add_anomaly): day, then _COLS."""
    return (
        days[i],
        readings.station_id[i],
        readings.ts[i],
        readings.seq[i],
        readings.ts_assigned[i],
        readings.received_at[i],
        processed_at,
        readings.values[i],
        readings.is_anomaly[i],
        readings.scores[i],
        readings.sensors[i],
        readings.model_version[i],
    )


def _applied(result: ResultSet) -> bool:
    """Whether a lightweight transaction applied: the first column of its first row."""
    return bool(result.one()[0])


def _shard(station_id: str) -> int:
    """The `alarms` partition of a station's alarms (stable across processes, unlike hash())."""
    return zlib.crc32(station_id.encode()) % ALARM_SHARDS


def _shares_list(shares: Sequence[SensorShare]) -> list[list[Any]]:
    return [[sensor, share] for sensor, share in shares]


def _shares(pairs: Iterable[Sequence[Any]]) -> tuple[SensorShare, ...]:
    return tuple((str(sensor), float(share)) for sensor, share in pairs)


def _part(t: AlarmTransition, value: list[Any]) -> str:
    """A part of an alarm row as its cell holds it: the key of the transition that set it,
    NUL, then the part as JSON. Of two cells with one write timestamp Cassandra keeps the one
    whose bytes are greater: the later key, as the history orders them (no key holds a NUL)."""
    return f"{t.key}\x00{json.dumps(value)}"


def _part_value(cell: str) -> tuple[str, Any]:
    """The key and the part of a cell _part made."""
    key, _, value = cell.partition("\x00")
    return key, json.loads(value)


def _fields(t: AlarmTransition) -> tuple[Any, ...]:
    """`t` as the columns _TRANSITION names; a missing `until` is left unset, not written as
    a null (which Cassandra would store as a tombstone)."""
    a = t.alarm
    until = UNSET_VALUE if t.until is None else t.until
    return (
        a.station_id,
        a.sensor,
        a.kind,
        t.ts,
        t.action,
        t.activation_ts,
        t.actor,
        t.severity,
        json.dumps(_shares_list(t.sensors)),
        t.comment,
        until,
        t.detail,
    )


def _transition(row: Sequence[Any]) -> AlarmTransition:
    """An alarm transition from its _TRANSITION columns (more may follow)."""
    station, sensor, kind, ts, action, activation, actor, severity, shares, text, until, detail = (
        row[:12]
    )
    return AlarmTransition(
        AlarmKey(station, sensor, kind),
        action,
        ts,
        activation,
        actor=actor,
        severity=severity,
        sensors=_shares(json.loads(shares)),
        comment=text,
        until=until,
        detail=detail,
    )


def _recorded(row: Sequence[Any]) -> RecordedTransition:
    """A logged transition from its _LOGGED columns."""
    return RecordedTransition(_transition(row), row[12])


def _alarm_at(alarm: AlarmKey) -> tuple[int, str, str, str]:
    """The primary key of `alarm`'s row in `alarms`."""
    return _shard(alarm.station_id), alarm.station_id, alarm.sensor, alarm.kind


def _stored_alarm(row: Sequence[Any]) -> StoredAlarm:
    """An alarm from its _ALARM_ROW columns, with the positions of what set its parts, as
    faultline.store.alarm_rows takes transitions into it."""
    station, sensor, kind, condition_cell, ack_cell, shelving_cell = row
    alarm = AlarmKey(station, sensor, kind)
    condition, condition_at = Condition(), None
    if condition_cell is not None:
        key, (ts, rank, active, activation, cleared, severity, shares) = _part_value(condition_cell)
        condition = Condition(active, activation, cleared, severity, _shares(shares))
        condition_at = (ts, rank, key)
    acked, acked_by, acked_at = (None, "", None)
    if ack_cell is not None:
        _, (acked, acked_by, acked_at) = _part_value(ack_cell)
    until, shelved_by, shelving_at = None, "", None
    if shelving_cell is not None:
        key, (until, shelved_by, ts) = _part_value(shelving_cell)
        shelving_at = (ts, key)
    operator = Operator(acked, acked_by, acked_at, until, shelved_by)
    return StoredAlarm(AlarmState(alarm, condition, operator), condition_at, shelving_at)


def _alarm_page(rows: Iterable[AlarmRow], q: Alarms) -> AlarmPage:
    """The page of `rows` that `q` asks for: those it matches, latest change first (ties by
    alarm id), after its cursor."""
    kept = sorted(
        (row for row in rows if matches(q, row)),
        key=lambda row: (-row.changed_at, row.state.alarm.id),
    )
    if q.after is not None:
        cursor = (-q.after[0], q.after[1])
        kept = [row for row in kept if (-row.changed_at, row.state.alarm.id) > cursor]
    page = kept[: q.limit]
    more = len(kept) > q.limit
    return AlarmPage(page, (page[-1].changed_at, page[-1].state.alarm.id) if more else None)
