"""Cassandra's minute aggregates under the races and half-finished writes its store survives.

Runs against the node in FAULTLINE_TEST_CASSANDRA (scripts/services/svc.py); without one it
skips, or fails when CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from cassandra import OperationTimedOut

from faultline.store import MinuteAggregates, StoreError
from faultline.store.aggregate import minute_partials
from faultline.store.base import LAST_MS
from faultline.store.cassandra import CassandraStore
from tests.contract.batches import SENSORS, T0, reading_frame, write_batch
from tests.store.servers import cassandra_keyspace, cassandra_store, cassandra_url

__all__ = ["cassandra_keyspace"]  # the fixture the stores here live in


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[CassandraStore]:
    opened = cassandra_store(request)
    yield opened
    opened.close()


def assert_aggregates_of(store: CassandraStore, frame: pd.DataFrame) -> None:
    wanted = minute_partials(frame, SENSORS)
    got = store.query(MinuteAggregates(0, LAST_MS))
    pd.testing.assert_frame_equal(got.drop(columns="mean"), wanted, check_exact=False, rtol=1e-12)


def test_a_writer_landing_between_the_reads_of_another_counts_once(
    store: CassandraStore, cassandra_keyspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other writer stores half of this one's readings (and some of its own in the same
    minutes) after this one read the partition: this one's condition fails, it reads again,
    and every value is in the aggregates once."""
    other = CassandraStore(cassandra_url(cassandra_keyspace))
    ts = [T0 + k * 1000 for k in range(120)]  # two minutes that both writers add to
    values = np.random.default_rng(0).normal(30, 4, (120, 3))
    frame = reading_frame("s-1", ts, values=values)
    theirs = frame.iloc[40:].reset_index(drop=True)
    run = store._run
    interrupted: list[str] = []

    def run_then_interrupt(name: str, *args: object, **kwargs: object) -> object:
        result = run(name, *args, **kwargs)
        if name == "partition_count" and not interrupted:
            interrupted.append(name)
            other.write(write_batch(theirs))
        return result

    monkeypatch.setattr(store, "_run", run_then_interrupt)
    store.write(write_batch(frame.iloc[:80].reset_index(drop=True)))

    assert interrupted
    assert_aggregates_of(store, frame)
    other.close()


def test_a_write_that_fails_halfway_is_completed_by_its_replay(
    store: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = reading_frame("s-1", [T0 + k * 700 for k in range(300)])
    batch = write_batch(frame)

    def time_out(*_args: object) -> None:
        raise OperationTimedOut("no answer in time")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_commit_readings", time_out)
        with pytest.raises(StoreError, match="part of the batch may be stored"):
            store.write(batch)
    assert store.query(MinuteAggregates(0, LAST_MS)).empty

    store.write(batch)
    store.write(batch)

    assert_aggregates_of(store, frame)
