"""Every malformed request gets a 4xx that names what is wrong, and nothing else happens."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import Served

GOOD = {"humidity": 60.0, "noise_level": 50.0, "temperature": 25.0}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"time_range": ""},
        {"time_range": "1"},
        {"time_range": "h"},
        {"time_range": "1y"},
        {"time_range": "1.5h"},
        {"time_range": "one hour"},
        {"time_range": "0m"},
        {"time_range": "-5m"},
        {"time_range": "5m; drop table readings"},
        {"time_range": "3651d"},
        {"time_range": "99999999999999999999d"},
    ],
    ids=lambda p: repr(p.get("time_range", "missing")),
)
def test_outliers_count_refuses_bad_ranges_with_examples(
    client: httpx.Client, params: dict[str, str]
) -> None:
    response = client.get("/api/outliers_count", params=params)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "time_range" in detail
    assert "5m" in detail or "3650d" in detail


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten", "1.5", ""])
def test_latest_anomalies_refuses_bad_limits(client: httpx.Client, limit: str) -> None:
    response = client.get("/api/latest_anomalies", params={"limit": limit})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


def _predict_error(client: httpx.Client, **kwargs: object) -> tuple[int, str]:
    response = client.post("/api/predict", **kwargs)  # type: ignore[arg-type]
    return response.status_code, str(response.json()["detail"])


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"humidity": 60.0, "noise_level": 50.0}, "temperature", "Field required"),
        ({**GOOD, "humidity": "60.0"}, "humidity", "valid number"),
        ({**GOOD, "humidity": None}, "humidity", "valid number"),
        ({**GOOD, "humidity": True}, "humidity", "valid number"),
        ({**GOOD, "humidity": [60.0]}, "humidity", "valid number"),
        ({**GOOD, "humidity": 150.0}, "humidity", "outside its physical range [0, 100]"),
        ({**GOOD, "temperature": -273.0}, "temperature", "outside its physical range"),
        ({**GOOD, "pressure": 1.0}, "pressure", "Extra inputs are not permitted"),
    ],
)
def test_predict_names_the_field_at_fault(
    client: httpx.Client, body: dict[str, object], field: str, message: str
) -> None:
    status, detail = _predict_error(client, json=body)

    assert status == 422
    assert field in detail
    assert message in detail


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_predict_refuses_non_finite_values(client: httpx.Client, token: str) -> None:
    body = f'{{"humidity": {token}, "noise_level": 50.0, "temperature": 25.0}}'

    status, detail = _predict_error(
        client, content=body, headers={"content-type": "application/json"}
    )

    assert status == 422
    assert "humidity" in detail
    assert "finite number" in detail


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "Field required"), (b"{not json", "JSON decode error"), (b"[1, 2, 3]", "valid dict")],
    ids=["empty", "not-json", "not-an-object"],
)
def test_predict_refuses_bodies_that_are_no_object(
    client: httpx.Client, content: bytes, message: str
) -> None:
    status, detail = _predict_error(
        client, content=content, headers={"content-type": "application/json"}
    )

    assert status == 422
    assert message in detail


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-01-01T00:00:00"}, "from has no timezone"),
        ({"to": "2026-01-01 00:30:00"}, "to has no timezone"),
        ({"from": "yesterday"}, "from must be an ISO 8601 timestamp"),
        ({"from": "1767225600000"}, "from must be an ISO 8601 timestamp"),
        (
            {"from": "2026-01-01T01:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "must be before to",
        ),
        ({"cursor": "not-a-cursor"}, "cursor is not one this API handed out"),
        ({"cursor": "MTIzNA"}, "cursor is not one this API handed out"),  # base64 of "1234"
        # Instants before year 1 or after 9999 in UTC, which no answer could write back.
        ({"from": "0001-01-01T00:00:00+01:00"}, "from must lie between 0001-01-01T00:00:00Z"),
        ({"to": "9999-12-31T23:59:59-01:00"}, "to must lie between"),
        ({"to": "9999-12-31T23:59:59.9999Z"}, "to must lie between"),
    ],
)
def test_station_readings_refuses_bad_times_and_cursors(
    client: httpx.Client, params: dict[str, str], message: str
) -> None:
    response = client.get("/api/stations/s-01/readings", params=params)

    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize("limit", ["0", "5001", "x"])
def test_station_readings_refuses_bad_limits(client: httpx.Client, limit: str) -> None:
    response = client.get("/api/stations/s-01/readings", params={"limit": limit})

    assert response.status_code == 422


def test_an_unknown_station_is_404(client: httpx.Client) -> None:
    response = client.get("/api/stations/s-99/readings")

    assert response.status_code == 404
    assert "s-99" in response.json()["detail"]


@pytest.mark.parametrize("limit", ["0", "1001"])
def test_dead_letters_refuses_bad_limits(client: httpx.Client, limit: str) -> None:
    assert client.get("/api/dead_letters", params={"limit": limit}).status_code == 422


def test_bad_requests_change_nothing(seeded: Served, client: httpx.Client) -> None:
    before = client.get("/api/stats").json()
    client.get("/api/outliers_count", params={"time_range": "-5m"})
    client.post("/api/predict", json={"humidity": "x"})
    client.post("/api/readings", content=b"{broken")

    after = client.get("/api/stats").json()

    assert after == before
    assert seeded.ctx.metrics.http_ingested._value.get() == 0


def test_the_earliest_and_latest_instants_are_answered(client: httpx.Client) -> None:
    early = client.get("/api/stations/s-01/readings", params={"to": "0001-01-01T00:30:00Z"})
    late = client.get(
        "/api/stations/s-01/readings",
        params={"from": "9999-12-31T23:00:00Z", "to": "9999-12-31T23:59:59.999Z"},
    )

    assert early.status_code == 200, early.text
    assert early.json()["from"] == "0001-01-01T00:00:00.000Z"  # the default hour, cut at year 1
    assert late.status_code == 200, late.text
    assert late.json()["readings"] == []
