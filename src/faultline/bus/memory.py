"""The in-process bus: a bounded log per topic, shared by threads of one process."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from faultline.bus.base import (
    Bus,
    BusClosed,
    BusError,
    Consumer,
    Message,
    Published,
    Record,
    check_fits,
    record_bytes,
)
from faultline.bus.idempotency import DEFAULT_WINDOW_S, KeyTable
from faultline.bus.options import url_options
from faultline.clock import Clock, SystemClock

DEFAULT_MAX_MESSAGES = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # readings are ~100 bytes: this only binds on odd payloads

_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "max_messages": int,
    "max_bytes": int,
    "idempotency_window_s": float,
}


class _Log:
    """One single-partition topic: a deque of messages and each group's acknowledged offset."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.id = uuid.uuid4().hex  # a new log, so offsets start again
        self.entries: deque[Message] = deque()
        self.bytes = 0  # of entries' keys and values
        self.base = 0  # offset of entries[0]
        self.next_offset = 0
        self.committed: dict[str, int] = {}  # group -> next offset to deliver after restart
        self.changed = threading.Condition()

    def trim(self) -> None:
        # Entries every group has acknowledged are never read again. With no group yet, keep
        # everything up to capacity so a consumer that joins late still sees the backlog.
        if not self.committed:
            return
        low = min(self.committed.values())
        while self.entries and self.base < low:
            self.bytes -= record_bytes(self.entries.popleft())
            self.base += 1


class MemoryBus(Bus):
    """Bounded: `publish` blocks while a topic's unacknowledged messages leave no room for all
    its records, counted both in messages (`max_messages`) and in bytes (`max_bytes`).

    Nothing survives the process: this is the bus of tests and of a deliberately volatile setup.
    """

    def __init__(
        self,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock | None = None,
        idempotency_window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be at least 1")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._clock = clock or SystemClock()
        self._keys = KeyTable(self._clock, idempotency_window_s)
        self._logs: dict[str, _Log] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> MemoryBus:
        """`memory://[?max_messages=N&max_bytes=N&idempotency_window_s=S]`."""
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.netloc or parts.path:
            raise ValueError(f"not a memory bus URL: {url!r} (want memory://[?options])")
        return cls(clock=clock, **url_options(url, parts.query, _URL_OPTIONS))

    def _log(self, topic: str) -> _Log:
        with self._lock:
            log = self._logs.get(topic)
            if log is None:
                log = self._logs[topic] = _Log(topic)
            return log

    def log_id(self, topic: str) -> str:
        return self._log(topic).id

    def publish(
        self,
        topic: str,
        records: Sequence[Record],
        timeout_s: float = 10.0,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        if self._closed:
            raise BusClosed("bus is closed")
        log = self._log(topic)
        batch = list(records)
        size = sum(record_bytes(r) for r in batch)
        check_fits(topic, len(batch), size, self.max_messages, self.max_bytes)

        def append() -> int:
            with log.changed:
                if not log.changed.wait_for(
                    lambda: (
                        self._closed
                        or (
                            len(log.entries) + len(batch) <= self.max_messages
                            and log.bytes + size <= self.max_bytes
                        )
                    ),
                    timeout_s,
                ):
                    raise BusError(
                        f"topic {topic!r} full ({len(log.entries)} unacknowledged messages, "
                        f"{log.bytes} bytes) for {timeout_s:g} s; none of the {len(batch)} "
                        "records published"
                    )
                if self._closed:
                    raise BusClosed("bus closed while publishing")
                now = self._clock.now_ms()
                for record in batch:
                    log.entries.append(
                        Message(topic, 0, log.next_offset, now, record.value, record.key)
                    )
                    log.next_offset += 1
                log.bytes += size
                log.changed.notify_all()
            return len(batch)

        if idempotency_key is None:
            return Published(append())
        return self._keys.publish(topic, idempotency_key, batch, append)

    def consumer(self, topic: str, group: str) -> Consumer:
        if self._closed:
            raise BusClosed("bus is closed")
        return _MemoryConsumer(self, self._log(topic), group)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            logs = list(self._logs.values())
        for log in logs:
            with log.changed:
                log.changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def lag(self, topic: str, group: str) -> int:
        """Messages published to `topic` that `group` has not acknowledged."""
        log = self._log(topic)
        with log.changed:
            return log.next_offset - log.committed.get(group, log.base)


class _MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, log: _Log, group: str) -> None:
        self._bus = bus
        self._log = log
        self._group = group
        with log.changed:
            log.committed.setdefault(group, log.base)
            self._position = log.committed[group]
        self._closed = False

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        if self._closed:
            raise BusError("consumer is closed")
        log = self._log
        with log.changed:
            log.changed.wait_for(
                lambda: self._bus.closed or log.next_offset > self._position, timeout_s
            )
            start = self._position - log.base
            end = min(start + max_messages, len(log.entries))
            batch = [log.entries[i] for i in range(start, end)]
            self._position += len(batch)
            return batch

    def ack(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        log = self._log
        with log.changed:
            upto = max(m.offset for m in messages) + 1
            if upto > log.committed.get(self._group, 0):
                log.committed[self._group] = upto
                log.trim()
                log.changed.notify_all()

    def close(self) -> None:
        self._closed = True
