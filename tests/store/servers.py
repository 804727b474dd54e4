"""Empty PostgreSQL and Cassandra stores on the servers `scripts/services/svc.py` started.

PostgreSQL: every store gets a schema of its own (the URL's search_path), dropped afterwards.
Cassandra's DDL takes seconds, so a test session creates one keyspace, and every store after the
first gets it back emptied with TRUNCATE (only the tables that hold something).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
import pytest
from cassandra.cluster import Session

from faultline.store.cassandra import CassandraStore
from faultline.store.cassandra_schema import TABLES, cluster, parse_url
from faultline.store.postgres import PostgresStore
from tests.services.endpoints import require_endpoint


@contextmanager
def refused_port() -> Iterator[int]:
    """A local port that refuses connections: bound, never listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def postgres_url(schema: str) -> str:
    base = require_endpoint("FAULTLINE_TEST_POSTGRES")
    return f"{base}?options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema, dropped with everything in it after the test."""
    base = require_endpoint("FAULTLINE_TEST_POSTGRES")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def postgres_store(request: pytest.FixtureRequest) -> PostgresStore:
    return PostgresStore(postgres_url(request.getfixturevalue("postgres_schema")))


def cassandra_url(keyspace: str, options: str = "consistency=LOCAL_QUORUM&replication=1") -> str:
    return f"cassandra://{require_endpoint('FAULTLINE_TEST_CASSANDRA')}/{keyspace}?{options}"


@pytest.fixture(scope="session")
def cassandra_keyspace() -> Iterator[str]:
    """A keyspace for this test session (named by process, so sessions side by side keep apart),
    holding the store's tables; dropped at the end."""
    keyspace = f"faultline_test_{os.getpid()}"
    CassandraStore(cassandra_url(keyspace)).close()
    yield keyspace
    with cassandra_session() as session:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)


def cassandra_store(request: pytest.FixtureRequest) -> CassandraStore:
    keyspace = request.getfixturevalue("cassandra_keyspace")
    with cassandra_session() as session:
        for table in TABLES:
            if session.execute(f"SELECT * FROM {keyspace}.{table} LIMIT 1").one() is not None:
                session.execute(f"TRUNCATE {keyspace}.{table}", timeout=60)
    return CassandraStore(cassandra_url(keyspace))


@contextmanager
def cassandra_session() -> Iterator[Session]:
    """A plain driver session to the test node, for setting up, inspecting and tearing down."""
    nodes = cluster(parse_url(cassandra_url("system")))
    try:
        yield nodes.connect()
    finally:
        nodes.shutdown()
