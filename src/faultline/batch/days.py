"""UTC days as the batch job and its callers name them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from faultline.clock import datetime_to_ms, ms_to_datetime

DAY_MS = 86_400_000
DAY_EXAMPLE = "2026-01-31"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(text: str) -> date:
    """A day written YYYY-MM-DD; ValueError with an example otherwise."""
    if not _DAY.fullmatch(text.strip()):
        raise ValueError(f"a day is written YYYY-MM-DD, e.g. {DAY_EXAMPLE}; got {text!r}")
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a day of the calendar ({exc})") from None


def day_window(day: date) -> tuple[int, int]:
    """[start, end) of the UTC day in epoch ms."""
    start = datetime_to_ms(datetime.combine(day, time(), tzinfo=UTC))
    return start, start + DAY_MS


def utc_day(ms: int) -> date:
    """The UTC day an instant falls in."""
    return ms_to_datetime(ms).date()


def previous_day(ms: int) -> date:
    """The UTC day before the one `ms` falls in: the last whole day."""
    return utc_day(ms) - timedelta(days=1)
