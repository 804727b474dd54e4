"""Seed 000's four endpoints answer with the seed's field names and JSON types."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.api.conftest import NOW
from tests.api.helpers import RUN_ID, SENSORS, Served

ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SEED_ITEM_TYPES = {
    "station_id": str,
    "record_time": str,
    "humidity": float,
    "noise_level": float,
    "temperature": float,
    "is_outlier": bool,
    "mlflow_id": str,
}
SEED_PREDICT_EXAMPLE = {"humidity": 65.2, "noise_level": 55.7, "temperature": 28.3}


def test_latest_anomalies_items_have_the_seed_fields_and_types(client: httpx.Client) -> None:
    response = client.get("/api/latest_anomalies")

    assert response.status_code == 200
    items = response.json()
    assert isinstance(items, list)
    assert items
    for item in items:
        for name, kind in SEED_ITEM_TYPES.items():
            assert type(item[name]) is kind, (name, item[name])
        assert item["is_outlier"] is True
        assert ISO_UTC_MS.fullmatch(item["record_time"])


def test_latest_anomalies_are_newest_first_with_the_new_fields(client: httpx.Client) -> None:
    items = client.get("/api/latest_anomalies", params={"limit": 10}).json()

    assert [(i["station_id"], i["ts_ms"]) for i in items] == [
        ("s-04", NOW - 1000),
        ("s-01", NOW - 10_000),
        ("s-01", NOW - 400_000),
        ("s-01", NOW - 500_000),
        ("s-02", NOW - 7_200_000 + 2000),
    ]
    newest = items[0]
    assert newest["record_time"] == "2026-01-01T00:59:59.000Z"
    assert newest["mlflow_id"] == RUN_ID
    assert newest["model_version"] == RUN_ID
    assert newest["sensors"] == ["humidity", "noise_level"]
    assert newest["seq"] == (NOW - 1000) // 1000
    assert newest["ts_assigned"] is False
    # JSON has no infinity: a score of +inf comes back as null, not as a broken document.
    assert newest["scores"] == {"iforest": None, "robust": 0.2}
    assert items[-1]["mlflow_id"] == "model-1"  # a version that is no MLflow run id passes through


def test_latest_anomalies_limit_and_station_filter(client: httpx.Client) -> None:
    assert len(client.get("/api/latest_anomalies", params={"limit": 2}).json()) == 2

    only = client.get("/api/latest_anomalies", params={"station_id": "s-01"}).json()

    assert [i["station_id"] for i in only] == ["s-01"] * 3


@pytest.mark.parametrize(
    ("time_range", "count"), [("1h", 4), ("5m", 2), ("3h", 5), ("30d", 5), ("5s", 1), (" 4h ", 5)]
)
def test_outliers_count_counts_event_times_in_the_range(
    client: httpx.Client, time_range: str, count: int
) -> None:
    response = client.get("/api/outliers_count", params={"time_range": time_range})

    assert response.status_code == 200
    body = response.json()
    assert body["time_range"] == time_range.strip()
    assert type(body["outliers_count"]) is int
    assert body["outliers_count"] == count
    assert body["to"] == "2026-01-01T01:00:00.000Z"


def test_outliers_count_has_exactly_the_seed_fields_plus_the_range(client: httpx.Client) -> None:
    body = client.get("/api/outliers_count", params={"time_range": "1h"}).json()

    assert body == {
        "time_range": "1h",
        "outliers_count": 4,
        "from": "2026-01-01T00:00:00.000Z",
        "to": "2026-01-01T01:00:00.000Z",
    }


def test_predict_answers_with_the_seed_fields(client: httpx.Client) -> None:
    response = client.post("/api/predict", json=SEED_PREDICT_EXAMPLE)

    assert response.status_code == 200
    body = response.json()
    assert type(body["is_anomaly"]) is bool
    assert body["features"] == SEED_PREDICT_EXAMPLE
    assert body["model_version"] == RUN_ID
    assert type(body["score"]) is float
    assert body["registry_version"] == "3"


@pytest.mark.parametrize(
    ("features", "anomalous"),
    [
        ({"humidity": 60.0, "noise_level": 50.0, "temperature": 25.0}, False),
        # The seed README's own example: humidity 5 % where 60 ± 3 is normal.
        (
            {"humidity": 5.20311500477099, "noise_level": 17.48891168612748, "temperature": 22.86},
            True,
        ),
        (
            {"humidity": 60, "noise_level": 50, "temperature": 25},
            False,
        ),  # JSON integers are numbers
    ],
)
def test_predict_uses_the_model(client: httpx.Client, features: dict, anomalous: bool) -> None:
    body = client.post("/api/predict", json=features).json()

    assert body["is_anomaly"] is anomalous
    assert (body["score"] > body["threshold"]) is anomalous


def test_check_drift_retrain_reports_a_real_check_and_no_retraining(
    client: httpx.Client,
) -> None:
    response = client.get("/api/check_drift_retrain")

    assert response.status_code == 200
    body = response.json()
    assert type(body["msg"]) is str
    assert body["retrained"] is False
    assert "Retraining is not available" in body["msg"]
    assert body["model_version"] == RUN_ID
    assert body["recent_size"] == 648  # every stored reading: fewer than the sample size
    assert body["reference_size"] == 2000
    assert set(body["sensors"]) == set(SENSORS)
    # The stored readings barely vary (25.0 to 27.0 °C), unlike the training data: drift.
    assert body["drift_detected"] is True
    assert "drift detected" in body["msg"]
    assert all(type(s["drifted"]) is bool for s in body["sensors"].values())


def test_seed_paths_are_in_the_openapi_document(seeded: Served, client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()

    for path in ("/api/latest_anomalies", "/api/outliers_count", "/api/check_drift_retrain"):
        assert "get" in spec["paths"][path]
    assert "post" in spec["paths"]["/api/predict"]
    reading = spec["components"]["schemas"]["Reading"]["properties"]
    assert set(SEED_ITEM_TYPES) <= set(reading)
    assert client.get("/docs").status_code == 200
