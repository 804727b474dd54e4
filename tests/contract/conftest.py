"""The stores the contract suite runs on: add a backend by adding a factory here.

A factory gets the requesting test's `request` (for fixtures such as tmp_path or a running
server) and returns an empty, open store; the fixture closes it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from faultline.store import MemoryStore, SqliteStore, Store
from tests.store.servers import (  # noqa: F401 (fixtures the server factories ask for)
    cassandra_keyspace,
    cassandra_store,
    postgres_schema,
    postgres_store,
)

StoreFactory = Callable[[pytest.FixtureRequest], Store]


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore()


def _sqlite(request: pytest.FixtureRequest) -> Store:
    return SqliteStore(request.getfixturevalue("tmp_path") / "faultline.db")


STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": postgres_store,
    "cassandra": cassandra_store,
}


@pytest.fixture(params=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    opened = STORE_FACTORIES[request.param](request)
    yield opened
    opened.close()
