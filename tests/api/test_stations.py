"""Station status and one station's readings, page by page."""

from __future__ import annotations

import httpx
import pytest

from faultline.api.station_routes import silent_after_ms, station_status
from faultline.config import load_settings
from faultline.store import StationSummary
from tests.api.conftest import NOW


def test_every_station_has_its_status(client: httpx.Client) -> None:
    body = client.get("/api/stations").json()

    statuses = {s["station_id"]: s["status"] for s in body["stations"]}
    assert statuses == {"s-01": "ok", "s-02": "silent", "s-03": "warming_up", "s-04": "anomalous"}
    assert body["now"] == "2026-01-01T01:00:00.000Z"
    assert body["silent_after_s"] == 10.0
    s02 = next(s for s in body["stations"] if s["station_id"] == "s-02")
    assert s02["silent_for_s"] == pytest.approx((7_200_000 - 4000 - 50) / 1000)
    s01 = next(s for s in body["stations"] if s["station_id"] == "s-01")
    assert (s01["readings"], s01["anomalies"], s01["last_is_outlier"]) == (600, 3, False)
    assert s01["last_record_time"] == "2026-01-01T00:59:59.000Z"
    assert set(s01["last_values"]) == {"temperature", "humidity", "noise_level"}


@pytest.mark.parametrize(
    ("rate_hz", "silent_ms"), [(1.0, 10_000), (0.1, 30_000), (50.0, 10_000), (0.0, 10_000)]
)
def test_silence_is_three_intervals_and_at_least_ten_seconds(
    rate_hz: float, silent_ms: int
) -> None:
    assert silent_after_ms(load_settings(simulate={"rate_hz": rate_hz})) == silent_ms


def test_silence_outranks_an_anomaly_and_an_anomaly_outranks_warm_up() -> None:
    summary = StationSummary("s", NOW, NOW, {}, last_is_anomaly=True, readings=1, anomalies=1)

    assert station_status(summary, NOW + 10_001, 10_000, warmup=30) == "silent"
    assert station_status(summary, NOW + 10_000, 10_000, warmup=30) == "anomalous"


def test_readings_default_to_the_last_hour_oldest_first(client: httpx.Client) -> None:
    body = client.get("/api/stations/s-01/readings").json()

    assert body["from"] == "2026-01-01T00:00:00.000Z"
    assert body["to"] == "2026-01-01T01:00:00.000Z"
    ts = [r["ts_ms"] for r in body["readings"]]
    assert len(ts) == 600
    assert ts == sorted(ts)
    assert body["next_cursor"] is None
    assert sum(r["is_outlier"] for r in body["readings"]) == 3


def test_pages_follow_cursors_without_gaps_or_repeats(client: httpx.Client) -> None:
    params: dict[str, str | int] = {
        "from": "2026-01-01T00:50:00Z",
        "to": "2026-01-01T01:50:00+01:00",  # the same instant as 00:50Z: timezones are honoured
        "limit": 250,
    }
    assert client.get("/api/stations/s-01/readings", params=params).status_code == 400
    params["to"] = "2026-01-01T02:00:00+01:00"
    seen: list[int] = []
    pages = 0
    while True:
        body = client.get("/api/stations/s-01/readings", params=params).json()
        pages += 1
        seen += [r["ts_ms"] for r in body["readings"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]

    assert pages == 3
    assert seen == list(range(NOW - 600_000, NOW, 1000))


def test_a_known_station_with_nothing_in_range_is_an_empty_page(client: httpx.Client) -> None:
    response = client.get("/api/stations/s-02/readings")  # its readings are 2 h old

    assert response.status_code == 200
    assert response.json()["readings"] == []
