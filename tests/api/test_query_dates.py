"""A date outside what a UTC datetime can represent, in any query parameter, is a 400 saying so."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

import httpx
import pytest

from faultline.clock import datetime_to_ms
from faultline.store import (
    FIRST_MS,
    LAST_DAY,
    LAST_MS,
    AnomalyCount,
    FaultLabels,
    GlobalAnomalies,
    GlobalAnomalyRuns,
    MinuteAggregates,
    QueryError,
    StationReadings,
)

OUT_OF_RANGE = (
    ("/api/global_anomalies", {"day": "9999-12-31"}, "9999-12-30"),
    ("/api/stations/s-01/readings", {"from": "0001-01-01T00:00:00+01:00"}, "from must lie between"),
    ("/api/stations/s-01/readings", {"to": "0001-01-01T00:00:00+01:00"}, "to must lie between"),
    ("/api/stations/s-01/readings", {"to": "9999-12-31T23:59:59-01:00"}, "to must lie between"),
    ("/api/stations/s-01/readings", {"from": "9999-12-31T23:59:59-01:00"}, "from must lie between"),
    (
        "/api/stations/s-01/readings",
        {"from": "0001-01-01T00:00:00+01:00", "to": "9999-12-31T23:59:59-01:00"},
        "to must lie between",
    ),
)


@pytest.mark.parametrize(("path", "params", "said"), OUT_OF_RANGE)
def test_an_unrepresentable_date_is_a_400_with_a_message(
    client: httpx.Client, path: str, params: dict[str, str], said: str
) -> None:
    response = client.get(path, params=params)

    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert said in detail
    assert "0001-01-01" in detail or "9999-12-3" in detail


def test_the_edges_of_the_range_are_answered(client: httpx.Client) -> None:
    first = client.get(
        "/api/stations/s-01/readings",
        params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999Z"},
    )
    assert first.status_code == 200
    assert first.json()["from"] == "0001-01-01T00:00:00.000Z"
    assert client.get("/api/global_anomalies", params={"day": "9999-12-30"}).status_code == 200
    assert client.get("/api/global_anomalies", params={"day": "0001-01-01"}).status_code == 200


def test_datetime_to_ms_converts_instants_beyond_datetimes_years() -> None:
    first = datetime(1, 1, 1, tzinfo=UTC)
    assert datetime_to_ms(first) == FIRST_MS
    assert datetime_to_ms(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == (
        FIRST_MS - 3_600_000
    )
    last = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    assert datetime_to_ms(last) == LAST_MS
    assert datetime_to_ms(datetime(2026, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)) == 1_767_225_600_002


@pytest.mark.parametrize(
    "make",
    [
        lambda: AnomalyCount(FIRST_MS - 1, 0),
        lambda: StationReadings("s", 0, LAST_MS + 1),
        lambda: FaultLabels(0, 2**62),
        lambda: MinuteAggregates(-(2**62), 0),
        lambda: GlobalAnomalies(date(9999, 12, 31)),
        lambda: GlobalAnomalies(LAST_DAY, date(9999, 12, 31)),
        lambda: GlobalAnomalyRuns(date(9999, 12, 31)),
    ],
)
def test_queries_refuse_unrepresentable_dates_when_made(make: Callable[[], object]) -> None:
    with pytest.raises(QueryError, match=r"0001-01-01|9999-12-3"):
        make()


def test_queries_at_the_edges_can_be_made() -> None:
    assert AnomalyCount(FIRST_MS, LAST_MS).end_ms == LAST_MS
    assert StationReadings("s", FIRST_MS, LAST_MS).start_ms == FIRST_MS
    assert GlobalAnomalies(LAST_DAY).days == (LAST_DAY, LAST_DAY)
    assert GlobalAnomalyRuns(date(1, 1, 1), LAST_DAY).days == (date(1, 1, 1), LAST_DAY)
