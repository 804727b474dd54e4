"""SQLite-bus behaviour beyond the shared bus contract: what the file keeps across processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from faultline.bus import BusError, Record, SqliteBus, open_bus


def test_messages_offsets_and_keys_outlive_the_bus_object(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    first = SqliteBus(path)
    log_id = first.log_id("t")
    first.publish("t", [Record(f"m{i}".encode(), b"s") for i in range(5)], idempotency_key="k")
    consumer = first.consumer("t", "g")
    consumer.ack(consumer.consume(2, timeout_s=0.1))
    consumer.close()
    first.close()

    again = SqliteBus(path)
    assert again.log_id("t") == log_id
    assert again.publish(
        "t", [Record(f"m{i}".encode(), b"s") for i in range(5)], idempotency_key="k"
    ).duplicate
    resumed = again.consumer("t", "g")
    assert [m.value for m in resumed.consume(10, timeout_s=0.1)] == [b"m2", b"m3", b"m4"]
    assert again.lag("t", "g") == 3
    again.close()


def test_a_recreated_file_is_a_new_log(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = SqliteBus(path)
    old = bus.log_id("t")
    bus.close()
    for leftover in tmp_path.glob("bus.db*"):
        leftover.unlink()
    assert SqliteBus(path).log_id("t") != old


def test_acknowledged_rows_are_deleted_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = SqliteBus(path)
    consumer = bus.consumer("t", "g")
    for _ in range(20):
        bus.publish("t", [Record(b"x" * 1000) for _ in range(100)])
        consumer.ack(consumer.consume(1000, timeout_s=0.1))
    rows, kept = (
        sqlite3.connect(path)
        .execute("SELECT (SELECT count(*) FROM messages), (SELECT messages + bytes FROM topics)")
        .fetchone()
    )
    assert (rows, kept) == (0, 0)
    assert bus.lag("t", "g") == 0
    bus.close()


def test_url_options_choose_the_sync_level_and_bounds(tmp_path: Path) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/b.db?sync=full&max_messages=9&max_bytes=99")
    assert isinstance(bus, SqliteBus)
    assert (bus.synchronous, bus.max_messages, bus.max_bytes) == ("FULL", 9, 99)
    assert bus.connect().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert SqliteBus(tmp_path / "n.db").connect().execute("PRAGMA synchronous").fetchone() == (1,)
    assert bus.connect().execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(ValueError, match="sync must be one of"):
        open_bus(f"sqlite:///{tmp_path}/b.db?sync=off")
    with pytest.raises(ValueError, match=r"want sqlite:///relative\.db"):
        open_bus("sqlite://host/b.db")


def test_relative_and_absolute_paths_read_as_for_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_bus("sqlite:///sub/rel.db")
    absolute = open_bus(f"sqlite:////{tmp_path.relative_to('/')}/abs.db")
    assert isinstance(relative, SqliteBus) and isinstance(absolute, SqliteBus)
    assert relative.path == Path("sub/rel.db") and (tmp_path / "sub/rel.db").is_file()
    assert absolute.path == tmp_path / "abs.db"


def test_a_closed_consumer_refuses_work(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.db")
    consumer = bus.consumer("t", "g")
    consumer.close()
    with pytest.raises(BusError):
        consumer.consume(1, timeout_s=0)


_PUBLISH_THEN_DIE = """
import os, signal, sys
from faultline.bus import Record, SqliteBus
bus = SqliteBus(sys.argv[1])
for n in range(50):
    bus.publish("t", [Record(f"{n}:{i}".encode(), b"s") for i in range(100)])
print("published", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush: what returned must be on file
"""


def test_what_a_killed_process_published_is_read_by_another(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    reader = SqliteBus(path, poll_s=0.01)
    consumer = reader.consumer("t", "engine")  # another process's consumer, already waiting
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PUBLISH_THEN_DIE), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -9 and "published" in done.stdout, done.stderr
    got = []
    while batch := consumer.consume(1000, timeout_s=0.5):
        got += batch
    assert [m.value for m in got] == [f"{n}:{i}".encode() for n in range(50) for i in range(100)]
    reader.close()


class _Failing:
    """A connection whose statements starting with `prefix` raise `error`, the rest run: the
    database errors SQLite gives on a full disk, an I/O error or a lock held too long."""

    def __init__(self, db: sqlite3.Connection, prefix: str, error: sqlite3.Error) -> None:
        self._db = db
        self.prefix = prefix
        self.error = error
        self.armed = True

    def _check(self, sql: str) -> None:
        if self.armed and sql.lstrip().upper().startswith(self.prefix):
            raise self.error

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: object) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.executemany(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


SQLITE_FAILURES = [
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("disk I/O error"),
    sqlite3.OperationalError("database is locked"),
]


@pytest.mark.parametrize("error", SQLITE_FAILURES, ids=str)
@pytest.mark.parametrize("failing", ["INSERT INTO MESSAGES", "UPDATE TOPICS", "COMMIT"])
def test_a_failing_publish_is_a_bus_error_and_publishes_nothing(
    tmp_path: Path, failing: str, error: sqlite3.Error
) -> None:
    bus = SqliteBus(tmp_path / "bus.db")
    consumer = bus.consumer("t", "g")
    injected = _Failing(bus._db, failing, error)
    bus._db = injected  # type: ignore[assignment]
    with pytest.raises(BusError, match=f"none of the 3 records published.*{error}"):
        bus.publish("t", [Record(b"a"), Record(b"b"), Record(b"c")], idempotency_key="k")
    assert not injected.in_transaction
    assert bus.lag("t", "g") == 0 and consumer.consume(10, timeout_s=0) == []

    injected.armed = False  # the disk has room again: the same publish goes through, once
    assert bus.publish("t", [Record(b"a"), Record(b"b"), Record(b"c")], idempotency_key="k")
    assert [m.value for m in consumer.consume(10, timeout_s=0)] == [b"a", b"b", b"c"]
    bus.close()


@pytest.mark.parametrize("error", SQLITE_FAILURES, ids=str)
def test_a_failing_consume_or_ack_is_a_bus_error_and_moves_nothing(
    tmp_path: Path, error: sqlite3.Error
) -> None:
    bus = SqliteBus(tmp_path / "bus.db")
    consumer = bus.consumer("t", "g")
    bus.publish("t", [Record(b"a"), Record(b"b")])
    real = consumer._db  # type: ignore[attr-defined]
    consumer._db = _Failing(real, "SELECT", error)  # type: ignore[attr-defined]
    with pytest.raises(BusError, match=f"nothing taken.*{error}"):
        consumer.consume(10, timeout_s=0)
    consumer._db = real  # type: ignore[attr-defined]
    got = consumer.consume(10, timeout_s=0)
    assert [m.value for m in got] == [b"a", b"b"]

    consumer._db = _Failing(real, "UPDATE OFFSETS", error)  # type: ignore[attr-defined]
    with pytest.raises(BusError, match=f"'g' did not move.*{error}"):
        consumer.ack(got)
    assert not real.in_transaction and bus.lag("t", "g") == 2
    consumer._db = real  # type: ignore[attr-defined]
    consumer.ack(got)
    assert bus.lag("t", "g") == 0
    bus.close()


def test_a_corrupt_file_is_a_bus_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    path.write_bytes(b"this is not a SQLite database, " * 200)
    with pytest.raises(BusError, match=f"cannot open {path} as a Faultline bus.*not a database"):
        SqliteBus(path)
