"""Checkpoints in every store: their checking, which of several wins, and their SQL.

A store keeps one checkpoint per (group, topic, partition) and replaces it only with one whose
offset is not lower, so an older batch written again (a replay, a retry) never moves the detector
state back. The SQL stores upsert under that condition in the batch's transaction; Cassandra
writes them after the rest of the batch (faultline.store.cassandra says why that suffices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faultline.schema import Checkpoint
from faultline.store.aggregate_sql import Sql
from faultline.store.base import Checkpoints, InvalidBatch

CheckpointRow = tuple[str, str, int, int, bytes, int]
"""(group, topic, partition, offset, state, written_at): a Checkpoint as stored."""

_INT64 = (0, 2**63 - 1)


def checkpoint_rows(checkpoints: Sequence[Checkpoint]) -> list[CheckpointRow]:
    """The batch's checkpoints checked, one per key: of several, the highest offset (the later
    one on a tie), as writing them one after the other would leave.

    Raises InvalidBatch for a checkpoint that cannot be stored.
    """
    chosen: dict[tuple[str, str, int], CheckpointRow] = {}
    for c in checkpoints:
        if not (isinstance(c.group, str) and c.group and isinstance(c.topic, str) and c.topic):
            raise InvalidBatch(f"checkpoint {c.group!r}/{c.topic!r}: group and topic must be text")
        numbers = (c.partition, c.offset, c.written_at)
        if not all(isinstance(n, int) and _INT64[0] <= n <= _INT64[1] for n in numbers):
            raise InvalidBatch(
                f"checkpoint {c.group}/{c.topic}/{c.partition}: partition, offset and written_at "
                f"must be integers in 0..2^63-1, got {numbers}"
            )
        if not isinstance(c.state, bytes):
            raise InvalidBatch(f"checkpoint {c.group}/{c.topic}/{c.partition}: state must be bytes")
        key = (c.group, c.topic, c.partition)
        known = chosen.get(key)
        if known is None or c.offset >= known[3]:
            chosen[key] = (c.group, c.topic, c.partition, c.offset, c.state, c.written_at)
    return list(chosen.values())


def checkpoint(row: tuple[Any, ...]) -> Checkpoint:
    group, topic, partition, offset, state, written_at = row
    return Checkpoint(group, topic, int(partition), int(offset), bytes(state), int(written_at))


# The SQL stores' table (migrated by each store, in its own types) and statements.
PUT_CHECKPOINT = """INSERT INTO checkpoints
    (consumer_group, topic, log_partition, log_offset, state, written_at)
    VALUES ({m}, {m}, {m}, {m}, {m}, {m})
    ON CONFLICT (consumer_group, topic, log_partition) DO UPDATE SET
    log_offset = excluded.log_offset, state = excluded.state, written_at = excluded.written_at
    WHERE excluded.log_offset >= checkpoints.log_offset"""


def checkpoints_sql(q: Checkpoints, mark: str) -> Sql:
    return (
        "SELECT consumer_group, topic, log_partition, log_offset, state, written_at "
        f"FROM checkpoints WHERE consumer_group = {mark} AND topic = {mark} "
        "ORDER BY log_partition",
        (q.group, q.topic),
    )
