"""Parsing of time ranges, timestamps, cursors and run ids (unit level)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from faultline.api.params import (
    decode_cursor,
    encode_cursor,
    instant_ms,
    parse_time_range,
    run_id_of,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", ("30s", 30_000)),
        ("5m", ("5m", 300_000)),
        ("4h", ("4h", 14_400_000)),
        ("30d", ("30d", 2_592_000_000)),
        (" 1h", ("1h", 3_600_000)),
        ("3650d", ("3650d", 315_360_000_000)),
    ],
)
def test_time_ranges(text: str, expected: tuple[str, int]) -> None:
    assert parse_time_range(text) == expected


@pytest.mark.parametrize("text", [None, "", "0s", "5M", "5 m", "+5m", "5min", "1e3s", "٣m"])
def test_bad_time_ranges(text: str | None) -> None:
    with pytest.raises(HTTPException) as raised:
        parse_time_range(text)
    assert raised.value.status_code == 400


def test_instants_honour_their_timezone() -> None:
    assert instant_ms("from", "2026-01-01T01:00:00+01:00") == 1_767_225_600_000
    assert instant_ms("from", "2026-01-01T00:00:00.123Z") == 1_767_225_600_123


@pytest.mark.parametrize("position", [(0, 0), (1_767_225_600_123, 42), (1, 10**15)])
def test_cursors_round_trip(position: tuple[int, int]) -> None:
    cursor = encode_cursor(position)

    assert decode_cursor(cursor) == position
    assert cursor.isascii() and "=" not in cursor


# base64 of "-1.2" and of "1.2.3"
@pytest.mark.parametrize("cursor", ["", "!!!", "LTEuMg", "MS4yLjM"])
def test_foreign_cursors(cursor: str) -> None:
    with pytest.raises(HTTPException):
        decode_cursor(cursor)


@pytest.mark.parametrize(
    ("version", "run_id"),
    [
        ("90e6bef02af84f3186e0e068e9fa4e4d", "90e6bef02af84f3186e0e068e9fa4e4d"),
        ("robust-v1,90e6bef02af84f3186e0e068e9fa4e4d", "90e6bef02af84f3186e0e068e9fa4e4d"),
        ("model-1", "model-1"),
        ("", ""),
    ],
)
def test_run_id_of_a_verdicts_model_version(version: str, run_id: str) -> None:
    assert run_id_of(version) == run_id
