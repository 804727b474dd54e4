"""Each store keeps what its `atomicity` promises when its backend fails halfway through a write.

The failure is injected after validation, at every statement of a write in turn
(tests/contract/faults.py): BATCH stores must show nothing of the failed batch, PARTITION stores
whatever they like until the batch is written again, after which both must hold exactly what a
store that never failed holds, every count and aggregate taking each reading once.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from faultline.alarm_schema import ANOMALY, AlarmKey, AlarmTransition
from faultline.schema import FaultLabel, WriteBatch
from faultline.store import (
    AnomalyCount,
    Atomicity,
    DeadLetterCount,
    DeadLetters,
    FaultLabels,
    LatestAnomalies,
    MemoryStore,
    MinuteAggregates,
    Stations,
    Store,
    StoreError,
)
from faultline.store.base import LAST_MS
from tests.contract.alarms import KEY, alarm_batch, alarm_snapshot, cleared, operator, raised
from tests.contract.batches import T0, dead_letter, reading_frame, write_batch
from tests.contract.faults import failing_at
from tests.contract.test_store_contract import all_readings

EVERYTHING = (0, LAST_MS)


def alarm_changes(k: int) -> list[AlarmTransition]:
    """The kth batch's alarm transitions: a new alarm raised; KEY's activation k-1 acknowledged,
    commented on and cleared, and activation k raised (batch 0 raises activation 0)."""
    new = AlarmKey(f"n-{k}", "humidity", ANOMALY)
    activation = T0 + k * 60_000
    out = [raised(new, activation + 500, "high"), raised(KEY, activation + 1)]
    if k > 0:
        before = activation - 60_000 + 1
        out += [
            operator(KEY, "ack", activation - 30_000, before),
            operator(KEY, "comment", activation - 20_000, before, text=f"batch {k}"),
            cleared(KEY, activation, before),
        ]
    return out


def batch(k: int) -> WriteBatch:
    """The kth batch: more readings of s-1 (its partition already holds some), a new station,
    anomalies, dead letters, a fault label and alarm transitions, all new."""
    old = [T0 + k * 60_000 + 1000 * i for i in range(4)]
    new = [T0 + k * 60_000 + 500 + 1000 * i for i in range(3)]
    frame = reading_frame(
        ["s-1"] * len(old) + [f"n-{k}"] * len(new), old + new, sensor_mask=[0, 1, 0, 0, 1, 0, 0]
    )
    letters = [dead_letter(100 * k + i) for i in range(2)]
    label = FaultLabel(f"n-{k}", "humidity", "drift", new[0], new[-1])
    return replace(
        write_batch(frame, dead_letters=letters, faults=[label]),
        alarm_transitions=tuple(alarm_changes(k)),
    )


def observed(store: Store) -> tuple[object, ...]:
    """What a store shows, comparable across backends (dead letter ids are not: a store may
    spend ids on a write that failed)."""
    stations = store.query(Stations())
    return (
        stations,
        {s.station_id: all_readings(store, s.station_id) for s in stations},
        store.query(AnomalyCount(*EVERYTHING)),
        store.query(LatestAnomalies(limit=1000)),
        [
            (d.received_at, d.source, d.reason, d.payload, d.kind)
            for d in store.query(DeadLetters(limit=1000))
        ],
        store.query(DeadLetterCount()),
        store.query(FaultLabels(*EVERYTHING)),
        store.query(MinuteAggregates(*EVERYTHING)).to_dict("records"),
        alarm_snapshot(store),
    )


def test_every_store_declares_its_atomicity(store: Store) -> None:
    assert isinstance(type(store).atomicity, Atomicity)


def test_a_write_failing_at_any_statement_keeps_the_stores_promise(store: Store) -> None:
    reference = MemoryStore()
    for s in (store, reference):
        s.write(batch(0))
    # Every batch(k) with k > 0 takes as many statements as batch(1) does.
    with failing_at(store, 0) as counting:
        store.write(batch(1))
    reference.write(batch(1))
    total = counting.count
    assert total >= 3  # the write had several statements to fail at
    # Every statement where they are few; else the first, the last and ten spread between.
    points = sorted({1, total, *(1 + (total - 1) * i // 11 for i in range(12))})
    for k, fail_at in enumerate(points, start=2):
        before = observed(store)
        with failing_at(store, fail_at) as statements, pytest.raises(StoreError):
            store.write(batch(k))
        assert statements.failed
        if store.atomicity is Atomicity.BATCH:
            assert observed(store) == before, f"failing at statement {fail_at} left a part"
        store.write(batch(k))  # what the engine does with a batch whose write failed
        reference.write(batch(k))
        assert observed(store) == observed(reference), f"replay after failing at {fail_at}"
    with failing_at(store, total + 1) as statements:
        store.write(batch(len(points) + 2))
    assert not statements.failed and statements.count == total


def test_a_write_failing_anywhere_in_its_alarm_part_keeps_the_stores_promise(store: Store) -> None:
    """Alarm transitions alone (as the API writes them), failing at every statement in turn."""
    reference = MemoryStore()
    for s in (store, reference):
        s.write(alarm_batch(*alarm_changes(0)))
    with failing_at(store, 0) as counting:
        store.write(alarm_batch(*alarm_changes(1)))
    reference.write(alarm_batch(*alarm_changes(1)))
    total = counting.count
    assert total >= 5  # every transition is at least one statement
    for k, fail_at in enumerate(range(1, total + 1), start=2):
        before = alarm_snapshot(store)
        with failing_at(store, fail_at) as statements, pytest.raises(StoreError):
            store.write(alarm_batch(*alarm_changes(k), processed_at=T0 + k))
        assert statements.failed
        if store.atomicity is Atomicity.BATCH:
            assert alarm_snapshot(store) == before, f"failing at statement {fail_at} left a part"
        store.write(alarm_batch(*alarm_changes(k), processed_at=T0 + k))
        reference.write(alarm_batch(*alarm_changes(k), processed_at=T0 + k))
        assert alarm_snapshot(store) == alarm_snapshot(reference), f"replay after {fail_at}"
