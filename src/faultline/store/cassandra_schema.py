"""The Cassandra store's URL, the cluster it names, and the keyspace's tables and migrations.

    cassandra://HOST[:PORT][,HOST[:PORT]...]/KEYSPACE[?consistency=LOCAL_QUORUM&replication=1
        &timeout=10]

`consistency` applies to every read and write (LWT rounds use the matching SERIAL level),
`replication` is the SimpleStrategy replication factor used when the keyspace is created (an
existing keyspace keeps its own), `timeout` the per-request timeout in seconds.

Every table is keyed so that each query names a whole partition key: nothing needs ALLOW
FILTERING and nothing scans a table. Days (`ts // DAY_MS`) bucket each time series, and
`buckets` says which days of a series hold anything, so a query over any range visits only the
partitions that exist in it. The alarms' rows, few and listed by their latest change, are kept
in ALARM_SHARDS fixed partitions instead, each read whole (see faultline.store.cassandra).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from cassandra import ConsistencyLevel, ProtocolVersion
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

from faultline.store.base import StoreError

N = TypeVar("N", int, float)

DAY_MS = 86_400_000
DEFAULT_PORT = 9042
# The fault_labels partition of labels lasting a day or more (no day number gets near it).
LONG_FAULTS = -(2**63)

_KEYSPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")  # Cassandra's rule for unquoted names
_READING = """ts_assigned boolean, received_at bigint, processed_at bigint, sensor_values text,
    is_anomaly boolean, scores text, sensors text, model_version text"""
# An alarm transition's fields beside its alarm, ts and key; shares: its sensors as JSON.
_TRANSITION = """action text, activation_ts bigint, actor text, severity text, shares text,
    comment text, until bigint, detail text"""
# The alarm rows' partitions: a station's alarms are in shard crc32(station_id) % ALARM_SHARDS.
# Never change it: rows already stored would no longer be found.
ALARM_SHARDS = 8

# Migration N (1-based) brings a keyspace from version N-1 to N. Append, never edit. Tables are
# named with their keyspace ({ks}), as in every statement: a session never USEs a keyspace, so
# a prepared statement cannot be read against the wrong one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # One station's day, oldest first. The static counts are the partition's rows: a write
        # changes rows and counts in one conditional batch (see faultline.store.cassandra).
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.readings (
            station_id text, day bigint, ts bigint, seq bigint, {_READING},
            n_readings bigint STATIC, n_anomalies bigint STATIC,
            PRIMARY KEY ((station_id, day), ts, seq))""",
        # Whole anomalous readings, newest first: "latest" reads the newest day first and stops
        # at the limit; "count in a range" reads only the days in the range.
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.anomalies (
            day bigint, ts bigint, station_id text, seq bigint, {_READING},
            PRIMARY KEY ((day), ts, station_id, seq))
            WITH CLUSTERING ORDER BY (ts DESC, station_id DESC, seq DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.station_anomalies (
            station_id text, day bigint, ts bigint, seq bigint, {_READING},
            PRIMARY KEY ((station_id, day), ts, seq))
            WITH CLUSTERING ORDER BY (ts DESC, seq DESC)""",
        # The days a series holds anything in: kind names the series, owner its station ('').
        """CREATE TABLE IF NOT EXISTS {ks}.buckets (
            kind text, owner text, bucket bigint,
            PRIMARY KEY ((kind, owner), bucket))
            WITH CLUSTERING ORDER BY (bucket DESC)""",
        "CREATE TABLE IF NOT EXISTS {ks}.stations (part int, station_id text, "
        "PRIMARY KEY ((part), station_id))",
        # Unique by source: the letter's home, and where its id is kept for replays.
        """CREATE TABLE IF NOT EXISTS {ks}.dead_letters (
            source text PRIMARY KEY, id bigint, received_at bigint, reason text, payload blob,
            kind text)""",
        """CREATE TABLE IF NOT EXISTS {ks}.dead_letters_by_day (
            day bigint, received_at bigint, id bigint, source text, reason text, payload blob,
            kind text,
            PRIMARY KEY ((day), received_at, id))
            WITH CLUSTERING ORDER BY (received_at DESC, id DESC)""",
        "CREATE TABLE IF NOT EXISTS {ks}.sequences (name text PRIMARY KEY, value bigint)",
        # A label in the day it starts; one lasting a day or more also in day LONG_FAULTS.
        """CREATE TABLE IF NOT EXISTS {ks}.fault_labels (
            day bigint, start_ts bigint, station_id text, sensor text, kind text, end_ts bigint,
            PRIMARY KEY ((day), start_ts, station_id, sensor, kind))""",
    ),
    (
        # The partition's 1-minute aggregates: minute -> sensor -> (count, sum, min, max). They
        # live beside the static counts because they must change in the same conditional batch
        # (one that spans tables is refused); see faultline.store.cassandra.
        """ALTER TABLE {ks}.readings ADD IF NOT EXISTS minutes map<bigint,
            frozen<map<text, frozen<tuple<bigint, double, double, double>>>>> STATIC""",
        # A day's global anomalies; buckets ("global_anomalies", "") lists the days that have any.
        """CREATE TABLE IF NOT EXISTS {ks}.global_anomalies (
            day bigint, station_id text, sensor text, minute bigint, value double,
            expected double, score double,
            PRIMARY KEY ((day), station_id, sensor, minute))""",
    ),
    (
        # The day's latest run record, static in the day's partition so that it, the deletion
        # of the previous run's anomalies and the new ones are one single-partition batch.
        """ALTER TABLE {ks}.global_anomalies ADD IF NOT EXISTS (run_started bigint STATIC,
            run_finished bigint STATIC, run_status text STATIC, run_series bigint STATIC,
            run_skipped frozen<map<text, bigint>> STATIC, run_anomalies bigint STATIC,
            run_error text STATIC)""",
    ),
    (
        # One detector checkpoint per (group, topic, partition), a (group, topic)'s together.
        """CREATE TABLE IF NOT EXISTS {ks}.checkpoints (
            consumer_group text, topic text, log_partition int, log_offset bigint, state blob,
            written_at bigint,
            PRIMARY KEY ((consumer_group, topic), log_partition))""",
    ),
    (
        # The alarm log, by key: the copy that decides which write of a key is the first
        # (INSERT ... IF NOT EXISTS) and what every other copy holds of it (see "Alarms" in
        # faultline.store.cassandra).
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.alarm_log (
            key text PRIMARY KEY, station_id text, sensor text, kind text, ts bigint,
            {_TRANSITION}, recorded_at bigint)""",
        # By alarm; rank orders the actions of one ts (clear < raise < escalate < operator).
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.alarm_history (
            alarm_id text, ts bigint, rank int, key text, station_id text, sensor text,
            kind text, {_TRANSITION}, recorded_at bigint,
            PRIMARY KEY ((alarm_id), ts, rank, key))""",
        # By UTC day of ts; buckets ("alarm_days", "") lists the days that have any.
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.alarm_days (
            day bigint, ts bigint, station_id text, sensor text, kind text, key text,
            {_TRANSITION},
            PRIMARY KEY ((day), ts, station_id, sensor, kind, key))""",
        # By UTC day of recorded_at; buckets ("alarm_feed", "") lists the days that have any.
        f"""CREATE TABLE IF NOT EXISTS {{ks}}.alarm_feed (
            bucket bigint, recorded_at bigint, key text, station_id text, sensor text,
            kind text, ts bigint, {_TRANSITION},
            PRIMARY KEY ((bucket), recorded_at, key))""",
        # One row per alarm, in ALARM_SHARDS partitions by station, a cell per part that a
        # transition sets whole: the condition, the acknowledgement and the shelving, each
        # behind the key of the transition that set it (faultline.store.cassandra._part).
        """CREATE TABLE IF NOT EXISTS {ks}.alarms (
            shard int, station_id text, sensor text, kind text, condition text, ack text,
            shelving text,
            PRIMARY KEY ((shard), station_id, sensor, kind))""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
# Every table holding data (what emptying a keyspace means), all but schema_version.
TABLES = (
    "readings",
    "anomalies",
    "station_anomalies",
    "buckets",
    "stations",
    "dead_letters",
    "dead_letters_by_day",
    "sequences",
    "fault_labels",
    "global_anomalies",
    "checkpoints",
    "alarm_log",
    "alarm_history",
    "alarm_days",
    "alarm_feed",
    "alarms",
)


@dataclass(frozen=True)
class CassandraOptions:
    hosts: tuple[str, ...]
    port: int
    keyspace: str
    consistency: int  # a cassandra.ConsistencyLevel value
    replication: int
    timeout_s: float

    @property
    def serial_consistency(self) -> int:
        """The Paxos level matching `consistency`: local to the data centre when it is."""
        name = ConsistencyLevel.value_to_name[self.consistency]
        return (
            ConsistencyLevel.LOCAL_SERIAL if name.startswith("LOCAL_") else ConsistencyLevel.SERIAL
        )


def parse_url(url: str) -> CassandraOptions:
    """The options a cassandra:// URL names; ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "cassandra" or not parts.netloc:
        raise ValueError(f"store URL {url!r}: write cassandra://HOST[:PORT][,HOST...]/KEYSPACE")
    hosts, ports = [], set()
    for address in parts.netloc.split(","):
        host, colon, port = address.rpartition(":") if ":" in address else (address, "", "")
        if not host or (colon and not port.isdigit()):
            raise ValueError(f"store URL {url!r}: {address!r} is not HOST or HOST:PORT")
        hosts.append(host)
        ports.add(int(port) if colon else DEFAULT_PORT)
    if len(ports) > 1:
        raise ValueError(f"store URL {url!r}: every host must use the same port")
    keyspace = parts.path.strip("/")
    if not _KEYSPACE.fullmatch(keyspace):
        raise ValueError(
            f"store URL {url!r}: the path must name a keyspace (a letter, then up to 47 "
            f"letters, digits or underscores), got {keyspace!r}"
        )
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(options) - {"consistency", "replication", "timeout"}
    if unknown:
        raise ValueError(
            f"store URL {url!r}: unknown options {sorted(unknown)}; "
            "known are consistency, replication, timeout"
        )
    level = options.get("consistency", "LOCAL_QUORUM").upper()
    if level not in ConsistencyLevel.name_to_value or level.endswith("SERIAL"):
        names = sorted(n for n in ConsistencyLevel.name_to_value if not n.endswith("SERIAL"))
        raise ValueError(f"store URL {url!r}: consistency must be one of {', '.join(names)}")
    return CassandraOptions(
        hosts=tuple(hosts),
        port=ports.pop(),
        keyspace=keyspace,
        consistency=ConsistencyLevel.name_to_value[level],
        replication=_positive(url, "replication", options.get("replication", "1"), int),
        timeout_s=_positive(url, "timeout", options.get("timeout", "10"), float),
    )


def _positive(url: str, name: str, text: str, kind: Callable[[str], N]) -> N:
    try:
        value = kind(text)
    except ValueError:
        value = kind("0")
    if not value > 0:
        raise ValueError(f"store URL {url!r}: {name} must be a positive number, got {text!r}")
    return value


def cluster(options: CassandraOptions) -> Cluster:
    """A driver Cluster for the nodes `options` name (not yet connected): token-aware, at the
    URL's consistency, rows as tuples."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        consistency_level=options.consistency,
        serial_consistency_level=options.serial_consistency,
        request_timeout=options.timeout_s,
        row_factory=tuple_factory,
    )
    return Cluster(
        list(options.hosts),
        port=options.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=options.timeout_s,
        # v4, which Cassandra 2.2 to 5 speak: v5 checksums every frame, and in this CPU-bound
        # Python client that made writes measurably slower (bench/bench_store.py).
        protocol_version=ProtocolVersion.V4,
    )


def migrate(session: Session, options: CassandraOptions, *, to: int = SCHEMA_VERSION) -> None:
    """Create the keyspace when missing and bring its tables to schema version `to` (at most
    SCHEMA_VERSION; a lower one builds the keyspace an older Faultline left, for tests).

    Every statement is idempotent (IF NOT EXISTS), so stores opening a new keyspace at the
    same time both succeed.
    """
    keyspace = options.keyspace
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{{'class': 'SimpleStrategy', 'replication_factor': {options.replication}}}"
    )
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_version (part int PRIMARY KEY, version int)"
    )
    row = session.execute(f"SELECT version FROM {keyspace}.schema_version WHERE part = 0").one()
    version = 0 if row is None else row[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"keyspace {keyspace} has schema version {version}, newer than this Faultline "
            f"knows ({SCHEMA_VERSION}): upgrade Faultline to open it"
        )
    for statements in MIGRATIONS[version:to]:
        for statement in statements:
            session.execute(statement.format(ks=keyspace))
    if version < to:
        session.execute(
            f"INSERT INTO {keyspace}.schema_version (part, version) VALUES (0, %s)", (to,)
        )
