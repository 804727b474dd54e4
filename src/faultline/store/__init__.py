"""Stores, chosen by URL: `memory://`, `sqlite:///relative.db`, `sqlite:////absolute.db`,
`postgresql://user@host:port/dbname` and `cassandra://host:port/keyspace?consistency=...`.

Server backends are imported when a URL asks for them, so their drivers (the `postgres` and
`cassandra` extras) are needed only where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from faultline.store.base import (
    ALARM_STATE_FILTERS,
    FIRST_MS,
    LAST_DAY,
    LAST_MS,
    AlarmHistory,
    AlarmPage,
    AlarmRow,
    Alarms,
    AlarmStateFilter,
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
    InvalidBatch,
    LatestAnomalies,
    MinuteAggregates,
    Query,
    QueryError,
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
    check_instants,
)
from faultline.store.memory import MemoryStore
from faultline.store.sqlite import SqliteStore

_SUPPORTED = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user@host:port/dbname, cassandra://host:port/keyspace"
)


def _open_memory(rest: str, url: str) -> Store:
    if rest:
        raise ValueError(f"store URL {url!r}: memory:// takes nothing after the scheme")
    return MemoryStore()


def _open_sqlite(rest: str, url: str) -> Store:
    # sqlite:///x.db -> rest "/x.db" (relative x.db); sqlite:////abs/x.db -> "//abs/x.db"
    if not rest.startswith("/"):
        raise ValueError(
            f"store URL {url!r}: a SQLite URL has no host; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    name = rest[1:]
    if not name or name.endswith("/"):
        raise ValueError(f"store URL {url!r} names no database file")
    if name == ":memory:":
        raise ValueError(f"store URL {url!r}: for a store in memory use memory://")
    path = Path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory for {path}: {exc}") from exc
    return SqliteStore(path)


def _open_postgres(_rest: str, url: str) -> Store:
    from faultline.store.postgres import PostgresStore

    return PostgresStore(url)


def _open_cassandra(_rest: str, url: str) -> Store:
    from faultline.store.cassandra import CassandraStore

    return CassandraStore(url)


_OPENERS: dict[str, Callable[[str, str], Store]] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "cassandra": _open_cassandra,
}


def open_store(url: str) -> Store:
    """The store a URL names; ValueError for URLs no store understands."""
    scheme, separator, rest = url.partition("://")
    opener = _OPENERS.get(scheme.lower()) if separator else None
    if opener is None:
        raise ValueError(f"unsupported store URL {url!r}: supported are {_SUPPORTED}")
    return opener(rest, url)


__all__ = [
    "ALARM_STATE_FILTERS",
    "FIRST_MS",
    "LAST_DAY",
    "LAST_MS",
    "AlarmHistory",
    "AlarmPage",
    "AlarmRow",
    "AlarmStateFilter",
    "AlarmTransitions",
    "Alarms",
    "AnomalyCount",
    "Atomicity",
    "Checkpoints",
    "DeadLetterCount",
    "DeadLetterRetention",
    "DeadLetterRow",
    "DeadLetters",
    "FaultLabels",
    "GlobalAnomalies",
    "GlobalAnomalyRuns",
    "InvalidBatch",
    "LatestAnomalies",
    "MemoryStore",
    "MinuteAggregates",
    "Query",
    "QueryError",
    "ReadingPage",
    "ReadingRow",
    "RecentReadings",
    "RecordedTransition",
    "SqliteStore",
    "StationReadings",
    "StationSummary",
    "Stations",
    "Store",
    "StoreError",
    "TransitionFeed",
    "check_instants",
    "open_store",
]
