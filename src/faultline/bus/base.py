"""The bus protocol: `publish` records to a topic, `consume` them in batches, `ack` what is done.

Delivery is at-least-once. A consumer belongs to a group; the group's position only moves when
the consumer acknowledges, so a consumer that dies before `ack` leaves its messages to be
delivered again to the next consumer of the same group. Within one key (a station) order is kept.

A publish is all or nothing: it appends every record or, raising BusError, none, so a producer
can retry the same records without leaving half of them behind. A publish may carry an
idempotency key: the same key with the same records again, within the bus's retention window,
appends nothing and answers as the first publish did (`Published.duplicate`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


class BusError(RuntimeError):
    """The bus could not do what was asked (closed, full past the timeout, unreachable)."""


class BusClosed(BusError):
    """The bus was closed: nothing more will be accepted, so retrying is pointless."""


class PublishTooLarge(BusError):
    """More records or bytes in one publish than the bus holds even when empty: never retry it."""


class IdempotencyConflict(BusError):
    """An idempotency key used again with different records."""


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did: `count` records taken, or, for a duplicate, taken by the first one."""

    count: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """What a producer hands the bus. The key decides the partition, and so the ordering."""

    value: bytes
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """What a consumer gets back: the record and where and when the bus stored it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # when the bus accepted it: Faultline's processing-time origin
    value: bytes
    key: bytes | None = None

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Consumer(ABC):
    """One member of a consumer group on one topic."""

    @abstractmethod
    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `timeout_s` for the first; may return none."""

    @abstractmethod
    def ack(self, messages: Sequence[Message]) -> None:
        """Mark these messages (and everything before them in their partitions) as done."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group; unacknowledged messages will be delivered again."""


class Bus(ABC):
    """A partitioned, replayable log of records."""

    @abstractmethod
    def publish(
        self,
        topic: str,
        records: Sequence[Record],
        timeout_s: float = 10.0,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        """Append all records or none, blocking while the bus has no room for all (backpressure).

        Raises BusError when they could not be accepted within `timeout_s`, PublishTooLarge at
        once when they never could, and IdempotencyConflict when `idempotency_key` was used
        before with other records.
        """

    @abstractmethod
    def log_id(self, topic: str) -> str:
        """An identifier of `topic`'s log that changes when the log is recreated.

        Offsets are only meaningful within one log: whoever keeps an offset outside the bus
        (a checkpoint) keeps this with it, to tell a recreated log from the one it read.
        """

    @abstractmethod
    def consumer(self, topic: str, group: str) -> Consumer:
        """Join `group` on `topic`, starting from the group's acknowledged position."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; published records are flushed first."""


def record_bytes(record: Record | Message) -> int:
    """What a record costs the bus: its value and key."""
    return len(record.value) + len(record.key or b"")


def check_fits(topic: str, count: int, size: int, max_messages: int, max_bytes: int) -> None:
    """Refuse at once a publish that would not fit even an empty topic: waiting cannot help."""
    if count > max_messages or size > max_bytes:
        raise PublishTooLarge(
            f"{count} records of {size} bytes in one publish to {topic!r}: more than the bus "
            f"holds ({max_messages} messages, {max_bytes} bytes); send smaller batches"
        )
