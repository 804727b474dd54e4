"""The bus protocol: `publish` records to a topic, `consume` them in batches, `ack` what is done.

Delivery is at-least-once. A consumer belongs to a group; the group's position only moves when
the consumer acknowledges, so a consumer that dies before `ack` leaves its messages to be
delivered again to the next consumer of the same group. Within one key (a station) order is kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


class BusError(RuntimeError):
    """The bus could not do what was asked (closed, full past the timeout, unreachable)."""


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
    def publish(self, topic: str, records: Sequence[Record], timeout_s: float = 10.0) -> None:
        """Append records, blocking while the bus is full (backpressure).

        Raises BusError when the records could not be accepted within `timeout_s`.
        """

    @abstractmethod
    def consumer(self, topic: str, group: str) -> Consumer:
        """Join `group` on `topic`, starting from the group's acknowledged position."""

    @abstractmethod
    def log_id(self, topic: str) -> str:
        """An id of `topic`'s log that changes when the log is recreated (its offsets restart)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; published records are flushed first."""
