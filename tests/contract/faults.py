"""Failing a store's backend at its Nth low-level statement, after the batch passed validation.

Each backend has one point every write goes through: the memory store's journal step, SQLite's
and PostgreSQL's execute on the writing connection (and cursor), Cassandra's session execute.
`failing_at(store, n)` wraps that point for the duration of a `with` block so that the nth call
raises the error that backend's driver would (counting from 1; 0: never fail, only count), as a
lost connection or a full disk would in the middle of a write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faultline.store import MemoryStore, SqliteStore, Store, StoreError


class Statements:
    """Counts a backend's statements and fails the nth."""

    def __init__(self, fail_at: int, error: BaseException) -> None:
        self.fail_at = fail_at
        self.error = error
        self.count = 0
        self.failed = False

    def tick(self) -> None:
        self.count += 1
        if self.count == self.fail_at:
            self.failed = True
            raise self.error


class _Proxy:
    """Forwards everything to `inner`, counting the calls named in `counted` first."""

    counted: tuple[str, ...] = ()

    def __init__(self, inner: Any, statements: Statements) -> None:
        self._inner = inner
        self._statements = statements

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name not in self.counted:
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._statements.tick()
            return found(*args, **kwargs)

        return counted


class _SqliteConnection(_Proxy):
    counted = ("execute", "executemany")


class _PostgresCursor(_Proxy):
    counted = ("execute", "executemany", "copy")

    def __enter__(self) -> _PostgresCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


class _PostgresConnection(_Proxy):
    counted = ("execute",)

    def cursor(self) -> _PostgresCursor:
        return _PostgresCursor(self._inner.cursor(), self._statements)


class _CassandraSession(_Proxy):
    counted = ("execute", "execute_async")


@contextmanager
def failing_at(store: Store, n: int, error: BaseException | None = None) -> Iterator[Statements]:
    """Within the block, the nth statement of `store`'s backend raises `error` (by default the
    error type its driver raises when the server goes away)."""
    if isinstance(store, MemoryStore):
        statements = Statements(n, error or StoreError("injected failure"))
        journal = store._journal

        def failing_journal() -> Any:
            made = journal()
            made.step = statements.tick  # type: ignore[method-assign]
            return made

        store._journal = failing_journal  # type: ignore[method-assign]
        try:
            yield statements
        finally:
            del store._journal
        return
    if isinstance(store, SqliteStore):
        statements = Statements(n, error or sqlite3.OperationalError("injected failure"))
        writer = store._writer
        store._writer = _SqliteConnection(writer, statements)  # type: ignore[assignment]
        try:
            yield statements
        finally:
            store._writer = writer
        return
    from faultline.store.cassandra import CassandraStore
    from faultline.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        import psycopg

        statements = Statements(n, error or psycopg.OperationalError("injected failure"))
        live = store._live_writer
        store._live_writer = lambda: _PostgresConnection(live(), statements)  # type: ignore[method-assign]
        try:
            yield statements
        finally:
            del store._live_writer
        return
    if isinstance(store, CassandraStore):
        from cassandra import DriverException

        statements = Statements(n, error or DriverException("injected failure"))
        session = store._session
        store._session = _CassandraSession(session, statements)  # type: ignore[assignment]
        try:
            yield statements
        finally:
            store._session = session
        return
    raise TypeError(f"no way to fail {type(store).__name__}'s backend: add one here")
