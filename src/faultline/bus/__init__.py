"""Message buses, chosen by URL: `sqlite:///PATH` (durable, embedded), `memory://` (in-process)
or `kafka://host:port,...` (scale-out)."""

from __future__ import annotations

from urllib.parse import urlsplit

from faultline.bus.base import (
    Bus,
    BusClosed,
    BusError,
    Consumer,
    IdempotencyConflict,
    Message,
    Published,
    PublishTooLarge,
    Record,
)
from faultline.bus.memory import MemoryBus
from faultline.bus.sqlite import SqliteBus

__all__ = [
    "Bus",
    "BusClosed",
    "BusError",
    "Consumer",
    "IdempotencyConflict",
    "MemoryBus",
    "Message",
    "PublishTooLarge",
    "Published",
    "Record",
    "SqliteBus",
    "open_bus",
]


def open_bus(url: str) -> Bus:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBus.from_url(url)
    if scheme == "sqlite":
        return SqliteBus.from_url(url)
    if scheme == "kafka":  # imported lazily: confluent-kafka is an optional extra
        from faultline.bus.kafka import KafkaBus

        return KafkaBus.from_url(url)
    raise ValueError(
        f"unsupported bus URL {url!r}: use sqlite:///PATH, memory:// or kafka://host:port,..."
    )
