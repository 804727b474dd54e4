"""Message buses, chosen by URL: `memory://` (in-process) or `kafka://host:port,...`."""

from __future__ import annotations

from urllib.parse import urlsplit

from faultline.bus.base import Bus, BusError, Consumer, Message, Record
from faultline.bus.memory import MemoryBus

__all__ = ["Bus", "BusError", "Consumer", "MemoryBus", "Message", "Record", "open_bus"]


def open_bus(url: str) -> Bus:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBus()
    if scheme == "kafka":  # imported lazily: confluent-kafka is an optional extra
        from faultline.bus.kafka import KafkaBus

        return KafkaBus.from_url(url)
    raise ValueError(f"unsupported bus URL {url!r}: use memory:// or kafka://host:port,...")
