"""Query-parameter parsing the API does itself, so that bad input gets a 400 that teaches.

FastAPI's own validation answers 422 with a generic message; for the parameters below an operator
needs to see what a valid value looks like.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, date, datetime

from fastapi import HTTPException

from faultline.batch.days import day_window, parse_day
from faultline.clock import datetime_to_ms

_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIME_RANGE = re.compile(r"([0-9]{1,12})([smhd])")
MAX_RANGE_MS = 3650 * _UNIT_MS["d"]
TIME_RANGE_HELP = (
    "time_range must be a positive whole number followed by s, m, h or d "
    "(seconds, minutes, hours, days), e.g. 5m, 4h or 30d"
)
# The instants an answer can write back in ISO 8601: Python's datetime years 1 to 9999, in UTC.
EARLIEST_MS = datetime_to_ms(datetime(1, 1, 1, tzinfo=UTC))
LATEST_MS = datetime_to_ms(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))
_REPRESENTABLE = "0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z"
# OpenAPI schemas of optional date query parameters: the format sits in the string branch, where
# clients and fuzzers look for it (Pydantic would put it beside the anyOf).
DATE_TIME_QUERY = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
DATE_QUERY = {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})")
_KEYED_CURSOR = re.compile(r"(-?[0-9]{1,15})\.([\x21-\x7e]{1,300})")
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")


def bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def parse_time_range(text: str | None) -> tuple[str, int]:
    """Seed 000's `<n><unit>` duration: the text as given (trimmed) and its milliseconds."""
    label = (text or "").strip()
    if not label:
        raise bad_request(f"time_range is required: {TIME_RANGE_HELP}")
    match = _TIME_RANGE.fullmatch(label)
    if match is None:
        raise bad_request(f"{TIME_RANGE_HELP}; got {text!r}")
    span = int(match[1]) * _UNIT_MS[match[2]]
    if span == 0:
        raise bad_request(f"{TIME_RANGE_HELP}; got {text!r}, which spans no time")
    if span > MAX_RANGE_MS:
        raise bad_request(f"time_range may be at most 3650d; got {text!r}")
    return label, span


def instant_ms(name: str, text: str) -> int:
    """An ISO 8601 timestamp with a timezone in epoch milliseconds; naive times are refused."""
    example = "e.g. 2026-01-01T12:00:00Z or 2026-01-01T13:00:00+01:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(
            f"{name} must be an ISO 8601 timestamp, {example}; got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise bad_request(f"{name} has no timezone, which would be a guess: {example}")
    try:
        ms: int | None = datetime_to_ms(value)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 UTC
        ms = None
    if ms is None or not EARLIEST_MS <= ms <= LATEST_MS:
        raise bad_request(f"{name} must lie between {_REPRESENTABLE} in UTC; got {text!r}")
    return ms


def instant_or_epoch_ms(name: str, text: str) -> int:
    """`instant_ms`'s ISO 8601 timestamp, or a whole number of epoch milliseconds (UTC)."""
    if _EPOCH_MS.fullmatch(text.strip()):
        ms = int(text)
        if not EARLIEST_MS <= ms <= LATEST_MS:
            raise bad_request(f"{name} must lie between {_REPRESENTABLE} in UTC; got {text!r}")
        return ms
    return instant_ms(name, text)


def query_day(text: str | None, default: date) -> tuple[date, int, int]:
    """A UTC day (YYYY-MM-DD, or `default`) with its [start, end) in epoch ms."""
    try:
        wanted = default if text is None else parse_day(text)
    except ValueError as exc:
        raise bad_request(f"day: {exc}") from None
    start, end = day_window(wanted)
    if not (start >= EARLIEST_MS and end <= LATEST_MS):
        # The day's end, which the answer states, must be an instant it can write.
        raise bad_request(f"day: must lie between 0001-01-01 and 9999-12-30; got {text!r}")
    return wanted, start, end


def encode_cursor(position: tuple[int, int]) -> str:
    """The store's (ts, seq) page position as an opaque string."""
    return base64.urlsafe_b64encode(f"{position[0]}.{position[1]}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise bad_request("cursor is not one this API handed out: pass next_cursor unchanged")
    return int(match[1]), int(match[2])


def encode_keyed_cursor(position: tuple[int, str]) -> str:
    """A (time, key) page position, as the alarm store hands it out, as an opaque string."""
    raw = f"{position[0]}.{position[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keyed_cursor(text: str) -> tuple[int, str]:
    """The (time, key) position back; the key is printable ASCII, the time representable."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    match = _KEYED_CURSOR.fullmatch(raw)
    if match is None or not EARLIEST_MS <= int(match[1]) <= LATEST_MS:
        raise bad_request("cursor is not one this API handed out: pass next_cursor unchanged")
    return int(match[1]), match[2]


def run_id_of(model_version: str) -> str:
    """Seed 000's `mlflow_id`: the MLflow run id inside a verdict's model_version.

    A verdict's model_version joins the versions of every detector that has one; the MLflow run
    id is the 32-hex-digit part. Versions from elsewhere (tests, other registries) pass through.
    """
    parts = [p for p in model_version.split(",") if p]
    for part in parts:
        if _RUN_ID.fullmatch(part):
            return part
    return parts[0] if parts else ""
