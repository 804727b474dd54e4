"""Injectable clocks: every component asks a clock for "now" so tests can control time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of processing time, in UTC."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait; a manual clock advances instead of blocking."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to; `sleep` advances it."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += round(seconds * 1000)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_ms(value: datetime) -> int:
    """An aware datetime to epoch milliseconds (rounded half to even); naive datetimes are
    refused, not guessed.

    Exact integer arithmetic, so that any aware datetime converts, even one whose UTC instant
    lies outside datetime's years 1 to 9999 (0001-01-01T00:00:00+01:00): saying whether such an
    instant is acceptable is up to the caller.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: a timezone is required")
    ms, micros = divmod((value - _EPOCH) // timedelta(microseconds=1), 1000)
    return ms + (micros > 500 or (micros == 500 and ms % 2 == 1))


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC string with millisecond precision."""
    return ms_to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
