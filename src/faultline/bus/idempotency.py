"""Idempotent publishing for the buses that keep their keys in process memory.

A key is remembered with a digest of the records it published, for `window_s` and at most
`max_keys` keys (the oldest are forgotten first), so memory stays bounded. Publishes with the
same key are serialised: a second one waits for the first to finish and then sees its result,
so two concurrent retries cannot both append.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from faultline.bus.base import IdempotencyConflict, Published, Record
from faultline.clock import Clock

DEFAULT_WINDOW_S = 24 * 3600.0
DEFAULT_MAX_KEYS = 100_000


def records_digest(records: Sequence[Record]) -> bytes:
    """A digest of the records, keys included, that tells a retry from a different publish."""
    h = hashlib.sha256()
    for record in records:
        key = record.key
        # Lengths first, so ("ab", "c") and ("a", "bc") differ; -1 marks a missing key.
        h.update((-1 if key is None else len(key)).to_bytes(8, "big", signed=True))
        h.update(key or b"")
        h.update(len(record.value).to_bytes(8, "big"))
        h.update(record.value)
    return h.digest()


def conflict(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {key!r} was already used for different records: "
        "use a new key for a new request"
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    count: int
    at_ms: int


class KeyTable:
    """Idempotency keys of one bus, per topic."""

    def __init__(
        self, clock: Clock, window_s: float = DEFAULT_WINDOW_S, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if window_s <= 0 or max_keys < 1:
            raise ValueError("the idempotency window and key limit must be positive")
        self._clock = clock
        self._window_ms = round(window_s * 1000)
        self._max_keys = max_keys
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._in_flight: set[tuple[str, str]] = set()
        self._changed = threading.Condition()

    def publish(
        self, topic: str, key: str, records: Sequence[Record], append: Callable[[], int]
    ) -> Published:
        """`append()` the records unless `key` already published them; `append` returns a count."""
        digest = records_digest(records)
        slot = (topic, key)
        with self._changed:
            self._changed.wait_for(lambda: slot not in self._in_flight)
            self._expire()
            seen = self._entries.get(slot)
            if seen is not None:
                if seen.digest != digest:
                    raise conflict(key)
                return Published(seen.count, duplicate=True)
            self._in_flight.add(slot)
        try:
            count = append()
        except BaseException:
            with self._changed:
                self._in_flight.discard(slot)
                self._changed.notify_all()
            raise
        with self._changed:
            self._in_flight.discard(slot)
            self._entries[slot] = _Entry(digest, count, self._clock.now_ms())
            while len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)
            self._changed.notify_all()
        return Published(count)

    def _expire(self) -> None:
        horizon = self._clock.now_ms() - self._window_ms
        while self._entries:
            slot, entry = next(iter(self._entries.items()))
            if entry.at_ms >= horizon:
                break
            del self._entries[slot]
