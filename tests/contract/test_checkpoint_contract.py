"""The checkpoint contract: one per (group, topic, partition), never moved back, written with
the batch it belongs to, on every backend."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from faultline.schema import Checkpoint
from faultline.store import Checkpoints, StationReadings, Store, StoreError
from faultline.store.base import LAST_MS
from tests.contract.batches import T0, reading_frame, write_batch

GROUP, TOPIC = "engine", "faultline.readings"


def checkpoint(partition: int, offset: int, state: bytes = b"", **changes: object) -> Checkpoint:
    made = Checkpoint(GROUP, TOPIC, partition, offset, state or f"s{offset}".encode(), T0 + offset)
    return replace(made, **changes)


def write(store: Store, *checkpoints: Checkpoint) -> None:
    store.write(replace(write_batch(), checkpoints=checkpoints))


def stored(store: Store, group: str = GROUP, topic: str = TOPIC) -> list[Checkpoint]:
    return store.query(Checkpoints(group, topic))


def test_a_new_store_has_no_checkpoints(store: Store) -> None:
    assert stored(store) == []


def test_checkpoints_are_stored_with_the_readings_they_cover(store: Store) -> None:
    state = os.urandom(200_000) + b"\x00\xff"  # binary, incompressible, with NUL bytes
    readings = reading_frame(["s-1", "s-2"], [T0, T0 + 1])
    batch = replace(write_batch(readings), checkpoints=(checkpoint(1, 7, state), checkpoint(0, 3)))
    store.write(batch)
    assert stored(store) == [checkpoint(0, 3), checkpoint(1, 7, state)]  # by partition
    assert len(store.query(StationReadings("s-1", 0, LAST_MS)).rows) == 1


def test_an_offset_not_lower_replaces_a_lower_one_never(store: Store) -> None:
    write(store, checkpoint(0, 10))
    write(store, checkpoint(0, 12))
    assert stored(store) == [checkpoint(0, 12)]
    # An older batch written again (a retry, a replay) must not move the state back ...
    write(store, checkpoint(0, 11))
    assert stored(store) == [checkpoint(0, 12)]
    # ... while the same offset again replaces it (the same batch, written anew).
    again = checkpoint(0, 12, b"again", written_at=T0 + 99)
    write(store, again)
    assert stored(store) == [again]


def test_of_several_for_one_partition_in_a_batch_the_highest_offset_wins(store: Store) -> None:
    write(store, checkpoint(0, 5), checkpoint(0, 9), checkpoint(0, 7))
    assert stored(store) == [checkpoint(0, 9)]


def test_groups_and_topics_keep_their_own_checkpoints(store: Store) -> None:
    other_group = checkpoint(0, 1, group="another")
    other_topic = checkpoint(0, 2, topic="other.topic")
    write(store, checkpoint(0, 3), other_group, other_topic)
    assert stored(store) == [checkpoint(0, 3)]
    assert stored(store, group="another") == [other_group]
    assert stored(store, topic="other.topic") == [other_topic]


@pytest.mark.parametrize(
    "bad",
    [
        {"offset": -1},
        {"partition": -1},
        {"offset": 2**63},
        {"state": "text, not bytes"},
        {"group": ""},
        {"topic": 7},
    ],
    ids=[
        "negative offset",
        "negative partition",
        "offset beyond int64",
        "text state",
        "empty group",
        "topic not text",
    ],
)
def test_an_invalid_checkpoint_fails_the_batch_storing_nothing(
    store: Store, bad: dict[str, object]
) -> None:
    readings = reading_frame(["s-1"], [T0])
    batch = replace(
        write_batch(readings), checkpoints=(checkpoint(0, 1), replace(checkpoint(1, 2), **bad))
    )
    with pytest.raises(StoreError, match="checkpoint"):
        store.write(batch)
    assert stored(store) == []
    assert store.query(StationReadings("s-1", 0, LAST_MS)).rows == []
