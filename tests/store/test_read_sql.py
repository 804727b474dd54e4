"""The read path the SQLite and PostgreSQL stores share, on a bare sqlite3 connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from faultline.store import LatestAnomalies, StoreError
from faultline.store.read_sql import Dialect, answer, query_sql

SQLITE = Dialect(mark="?", anomalous="is_anomaly = 1", ts_bound_after_cursor=False)


def test_a_driver_error_is_a_store_error_naming_the_query() -> None:
    conn = sqlite3.connect(":memory:")  # no tables: the query fails in the driver

    @contextmanager
    def reader() -> Iterator[sqlite3.Connection]:
        yield conn

    q = LatestAnomalies(limit=5)
    sql = query_sql(q, SQLITE)
    assert sql is not None

    with pytest.raises(StoreError, match="LatestAnomalies failed: no such table: readings") as err:
        answer(q, sql, reader, sqlite3.Error)

    conn.close()
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)
