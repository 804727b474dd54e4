"""The in-process bus: a bounded log per topic, shared by threads of one process."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Sequence

from faultline.bus.base import Bus, BusError, Consumer, Message, Record
from faultline.clock import Clock, SystemClock


class _Log:
    """One single-partition topic: a deque of messages and each group's acknowledged offset."""

    def __init__(self, topic: str, capacity: int) -> None:
        self.topic = topic
        self.capacity = capacity
        self.entries: deque[Message] = deque()
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
            self.entries.popleft()
            self.base += 1


class MemoryBus(Bus):
    """Bounded: `publish` blocks while `capacity` unacknowledged messages wait in a topic."""

    def __init__(self, capacity: int = 100_000, clock: Clock | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._clock = clock or SystemClock()
        self._logs: dict[str, _Log] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._id = uuid.uuid4().hex  # every log of this bus begins and ends with the instance

    def _log(self, topic: str) -> _Log:
        with self._lock:
            log = self._logs.get(topic)
            if log is None:
                log = self._logs[topic] = _Log(topic, self._capacity)
            return log

    def publish(self, topic: str, records: Sequence[Record], timeout_s: float = 10.0) -> None:
        if self._closed:
            raise BusError("bus is closed")
        log = self._log(topic)
        pending = list(records)
        with log.changed:
            while pending:
                free = log.capacity - len(log.entries)
                if free <= 0:
                    if not log.changed.wait_for(
                        lambda: self._closed or len(log.entries) < log.capacity, timeout_s
                    ):
                        raise BusError(
                            f"topic {topic!r} full ({log.capacity} unacknowledged messages) "
                            f"for {timeout_s:g} s; {len(pending)} records not published"
                        )
                    if self._closed:
                        raise BusError("bus closed while publishing")
                    continue
                now = self._clock.now_ms()
                chunk, pending = pending[:free], pending[free:]
                for record in chunk:
                    log.entries.append(
                        Message(topic, 0, log.next_offset, now, record.value, record.key)
                    )
                    log.next_offset += 1
                log.changed.notify_all()

    def consumer(self, topic: str, group: str) -> Consumer:
        if self._closed:
            raise BusError("bus is closed")
        return _MemoryConsumer(self, self._log(topic), group)

    def log_id(self, topic: str) -> str:
        return self._id

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
