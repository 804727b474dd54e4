"""The durable embedded bus: a log per topic in one SQLite file (WAL), shared by processes.

Everything the bus knows is in the file: the messages, each consumer group's acknowledged
offset, each topic's log id and the idempotency keys, so a publish that returned and an ack
that returned survive the process. Each publish is one transaction, so it is all or nothing,
and the idempotency key is recorded in that same transaction: a kill can never leave records
without their key or a key without its records.

What survives what depends on `synchronous` (decision 9): with WAL, `normal` (the default)
writes each commit to the WAL file before returning but only fsyncs at checkpoints, so a
committed publish survives `kill -9` of any process (the data is in the operating system's
page cache) but the last commits may be lost if the machine loses power; `full` fsyncs the WAL
at every commit and survives power loss too, at the cost of one fsync per publish.

Several processes may share the file (`faultline ingest mqtt` in one, `faultline process` in
another): SQLite serialises writers, and a consumer that finds nothing new polls the file every
`poll_s` (a publisher in the same process wakes it at once). Each topic is one partition, as in
`MemoryBus`, so order is total and in particular kept per key. Messages every group has
acknowledged are deleted, so the file's size follows the backlog, not the history (SQLite
reuses the freed pages).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from faultline.bus.base import (
    Bus,
    BusClosed,
    BusError,
    Consumer,
    Message,
    Published,
    Record,
    check_fits,
    record_bytes,
)
from faultline.bus.idempotency import DEFAULT_WINDOW_S, conflict, records_digest
from faultline.bus.options import url_options
from faultline.clock import Clock, SystemClock

DEFAULT_MAX_MESSAGES = 1_000_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
_BUSY_TIMEOUT_MS = 30_000  # another process holding the write lock: wait this long for it

_SYNC = {"normal": "NORMAL", "full": "FULL"}


def _sync(value: str) -> str:
    if value.lower() not in _SYNC:
        raise ValueError(f"sync must be one of {sorted(_SYNC)}")
    return value.lower()


_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "sync": _sync,
    "max_messages": int,
    "max_bytes": int,
    "poll_s": float,
    "idempotency_window_s": float,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    log_id TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    messages INTEGER NOT NULL,  -- rows kept in messages, and their bytes: the backpressure gauge
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    topic INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    PRIMARY KEY (topic, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    topic INTEGER NOT NULL,
    grp TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    topic INTEGER NOT NULL,
    key TEXT NOT NULL,
    digest BLOB NOT NULL,
    count INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (at_ms);
"""


class SqliteBus(Bus):
    """A `Bus` in the SQLite file at `path`, bounded per topic by messages and bytes kept."""

    def __init__(
        self,
        path: Path | str,
        *,
        sync: str = "normal",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        poll_s: float = 0.05,
        idempotency_window_s: float = DEFAULT_WINDOW_S,
        clock: Clock | None = None,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be at least 1")
        if poll_s <= 0 or idempotency_window_s <= 0:
            raise ValueError("poll_s and idempotency_window_s must be positive")
        self.path = Path(path)
        self.synchronous = _SYNC[_sync(sync)]
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.poll_s = poll_s
        self._window_ms = round(idempotency_window_s * 1000)
        self._clock = clock or SystemClock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _failing(f"cannot open {self.path} as a Faultline bus"):
            self._db = self.connect()
            try:
                self._db.executescript(_SCHEMA)  # each statement is idempotent
            except BaseException:
                self._db.close()
                raise
        self._db_lock = threading.Lock()  # the publishing connection, shared by threads
        self._topics: dict[str, int] = {}
        # Woken by this process's publishes and acks; other processes' are found by polling.
        self._changed = threading.Condition()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> SqliteBus:
        """`sqlite:///relative.db` or `sqlite:////absolute.db`, as for the store, with options
        `?sync=normal|full&max_messages=N&max_bytes=N&poll_s=S&idempotency_window_s=S`."""
        parts = urlsplit(url)
        path = unquote(parts.path)[1:]
        if parts.scheme != "sqlite" or parts.netloc or not path or path.endswith("/"):
            raise ValueError(
                f"not a SQLite bus URL: {url!r} (want sqlite:///relative.db or "
                "sqlite:////absolute.db)"
            )
        return cls(path, clock=clock, **url_options(url, parts.query, _URL_OPTIONS))

    def connect(self) -> sqlite3.Connection:
        """A connection of its own (one per consumer, so reads do not queue behind publishes)."""
        db = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # Trimming frees pages for reuse; keep the WAL itself from staying at its peak size.
            db.execute("PRAGMA journal_size_limit=67108864")
        except BaseException:
            db.close()
            raise
        return db

    def topic_id(self, topic: str) -> int:
        """The topic's row, created (with a new log id) on first use by any process."""
        known = self._topics.get(topic)
        if known is not None:
            return known
        with _failing(f"topic {topic!r} unavailable"), self._db_lock, _Transaction(self._db):
            self._db.execute(
                "INSERT OR IGNORE INTO topics (name, log_id, next_offset, messages, bytes)"
                " VALUES (?, ?, 0, 0, 0)",
                (topic, uuid.uuid4().hex),
            )
            (found,) = self._db.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()
        self._topics[topic] = int(found)
        return int(found)

    def log_id(self, topic: str) -> str:
        tid = self.topic_id(topic)
        with _failing(f"topic {topic!r} unavailable"), self._db_lock:
            (found,) = self._db.execute("SELECT log_id FROM topics WHERE id = ?", (tid,)).fetchone()
        return str(found)

    def publish(
        self,
        topic: str,
        records: Sequence[Record],
        timeout_s: float = 10.0,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        self._check_open()
        batch = list(records)
        size = sum(record_bytes(r) for r in batch)
        check_fits(topic, len(batch), size, self.max_messages, self.max_bytes)
        tid = self.topic_id(topic)
        digest = records_digest(batch) if idempotency_key is not None else b""
        deadline = time.monotonic() + timeout_s
        while True:
            # Each attempt is one transaction, rolled back on any error: nothing was published.
            with _failing(f"publishing to {topic!r}: none of the {len(batch)} records published"):
                done = self._try_publish(tid, batch, size, idempotency_key, digest)
            if done is not None:
                if not done.duplicate and batch:
                    with self._changed:
                        self._changed.notify_all()
                return done
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with _failing(f"topic {topic!r} full for {timeout_s:g} s"):
                    held, held_bytes = self._backlog(tid)
                raise BusError(
                    f"topic {topic!r} full ({held} unacknowledged messages, {held_bytes} bytes) "
                    f"for {timeout_s:g} s; none of the {len(batch)} records published"
                )
            with self._changed:
                self._changed.wait(min(remaining, self.poll_s))
            self._check_open()

    def _try_publish(
        self, tid: int, batch: list[Record], size: int, key: str | None, digest: bytes
    ) -> Published | None:
        """One attempt in one transaction; None when there is no room for all of `batch`."""
        db = self._db
        with self._db_lock, _Transaction(db):
            if key is not None:
                now = self._clock.now_ms()
                db.execute(
                    "DELETE FROM idempotency WHERE at_ms < ?",
                    (now - self._window_ms,),
                )
                seen = db.execute(
                    "SELECT digest, count FROM idempotency WHERE topic = ? AND key = ?",
                    (tid, key),
                ).fetchone()
                if seen is not None:
                    if seen[0] != digest:
                        raise conflict(key)
                    return Published(int(seen[1]), duplicate=True)
            next_offset, held, held_bytes = db.execute(
                "SELECT next_offset, messages, bytes FROM topics WHERE id = ?", (tid,)
            ).fetchone()
            if held + len(batch) > self.max_messages or held_bytes + size > self.max_bytes:
                return None
            now = self._clock.now_ms()
            db.executemany(
                "INSERT INTO messages (topic, offset, ts, key, value) VALUES (?, ?, ?, ?, ?)",
                [(tid, next_offset + i, now, r.key, r.value) for i, r in enumerate(batch)],
            )
            db.execute(
                "UPDATE topics SET next_offset = ?, messages = ?, bytes = ? WHERE id = ?",
                (next_offset + len(batch), held + len(batch), held_bytes + size, tid),
            )
            if key is not None:
                db.execute(
                    "INSERT INTO idempotency (topic, key, digest, count, at_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (tid, key, digest, len(batch), now),
                )
        return Published(len(batch))

    def _backlog(self, tid: int) -> tuple[int, int]:
        with self._db_lock:
            held, held_bytes = self._db.execute(
                "SELECT messages, bytes FROM topics WHERE id = ?", (tid,)
            ).fetchone()
        return int(held), int(held_bytes)

    def consumer(self, topic: str, group: str) -> Consumer:
        self._check_open()
        return _SqliteConsumer(self, topic, self.topic_id(topic), group)

    def lag(self, topic: str, group: str) -> int:
        """Messages published to `topic` that `group` has not acknowledged."""
        tid = self.topic_id(topic)
        with _failing(f"lag of {group!r} on {topic!r} unknown"), self._db_lock:
            row = self._db.execute(
                "SELECT t.next_offset - coalesce(o.next_offset, t.next_offset - t.messages)"
                " FROM topics t LEFT JOIN offsets o ON o.topic = t.id AND o.grp = ?"
                " WHERE t.id = ?",
                (group, tid),
            ).fetchone()
        return int(row[0])

    def notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout_s: float) -> None:
        """Until this process publishes or acknowledges, or `timeout_s` passed."""
        with self._changed:
            self._changed.wait(timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("bus is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.notify()
        with self._db_lock:
            self._db.close()


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """SQLite's own errors (disk full, I/O error, locked past the busy timeout, a corrupt file)
    as the BusError callers handle, saying what was not done."""
    try:
        yield
    except sqlite3.Error as exc:
        raise BusError(f"{what} ({type(exc).__name__}: {exc})") from exc


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception: the write lock is taken up
    front, so a transaction never fails half-way on a lock another process took."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()  # a failed COMMIT (disk full) may leave the transaction open
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite rolls some failures (a full disk, an I/O error) back by itself, and a
        # ROLLBACK then would raise over the error that matters.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


class _SqliteConsumer(Consumer):
    def __init__(self, bus: SqliteBus, topic: str, tid: int, group: str) -> None:
        self._bus = bus
        self._topic = topic
        self._tid = tid
        self._group = group
        with _failing(f"cannot join {group!r} on {topic!r}"):
            self._db = bus.connect()
            try:
                self._join(tid, group)
            except BaseException:
                self._db.close()
                raise
        self._closed = False

    def _join(self, tid: int, group: str) -> None:
        with _Transaction(self._db):
            # A new group starts at the oldest message still kept, as in MemoryBus.
            self._db.execute(
                "INSERT OR IGNORE INTO offsets (topic, grp, next_offset)"
                " SELECT id, ?, next_offset - messages FROM topics WHERE id = ?",
                (group, tid),
            )
            (self._position,) = self._db.execute(
                "SELECT next_offset FROM offsets WHERE topic = ? AND grp = ?", (tid, group)
            ).fetchone()

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        self._check_open()
        deadline = time.monotonic() + timeout_s
        while True:
            with _failing(f"consuming {self._topic!r}: nothing taken"):
                rows = self._db.execute(
                    "SELECT offset, ts, key, value FROM messages"
                    " WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
                    (self._tid, self._position, max_messages),
                ).fetchall()
            if rows:
                self._position = rows[-1][0] + 1
                return [
                    Message(
                        self._topic,
                        0,
                        offset,
                        ts,
                        bytes(value),
                        None if key is None else bytes(key),
                    )
                    for offset, ts, key, value in rows
                ]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._bus.closed:
                return []
            self._bus.wait(min(remaining, self._bus.poll_s))
            self._check_open()

    def ack(self, messages: Sequence[Message]) -> None:
        self._check_open()
        if not messages:
            return
        upto = max(m.offset for m in messages) + 1
        db = self._db
        failing = _failing(f"acknowledging on {self._topic!r}: {self._group!r} did not move")
        with failing, _Transaction(db):
            moved = db.execute(
                "UPDATE offsets SET next_offset = ?"
                " WHERE topic = ? AND grp = ? AND next_offset < ?",
                (upto, self._tid, self._group, upto),
            ).rowcount
            if not moved:
                return
            # Delete what every group has acknowledged; the topic's gauge drops with it.
            (low,) = db.execute(
                "SELECT min(next_offset) FROM offsets WHERE topic = ?", (self._tid,)
            ).fetchone()
            count, size = db.execute(
                "SELECT count(*), coalesce(sum(length(value) + coalesce(length(key), 0)), 0)"
                " FROM messages WHERE topic = ? AND offset < ?",
                (self._tid, low),
            ).fetchone()
            if count:
                db.execute("DELETE FROM messages WHERE topic = ? AND offset < ?", (self._tid, low))
                db.execute(
                    "UPDATE topics SET messages = messages - ?, bytes = bytes - ? WHERE id = ?",
                    (count, size, self._tid),
                )
        self._bus.notify()

    def _check_open(self) -> None:
        if self._closed or self._bus.closed:
            raise BusClosed("consumer is closed")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
