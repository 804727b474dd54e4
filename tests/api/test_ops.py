"""Health, statistics, dead letters and Prometheus metrics."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from faultline.api import ops_routes
from faultline.clock import ManualClock
from tests.api.conftest import NOW
from tests.api.helpers import FixedModels, MissingModels, Served, serve, tiny_model


def test_health_is_200_when_every_component_is_ok(client: httpx.Client) -> None:
    response = client.get("/api/health")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["live"], body["ready"]) == ("ok", True, True)
    assert set(body["components"]) == {"store", "bus", "model"}
    assert all(c["status"] == "ok" for c in body["components"].values())


def test_a_failing_probe_makes_health_503_and_says_why(tmp_path: Path) -> None:
    probes = {
        "engine": lambda: "no batch committed for 42 s",
        "simulator": lambda: None,
    }
    with serve(tmp_path, ManualClock(NOW), models=FixedModels(tiny_model()), probes=probes) as s:
        response = httpx.get(f"{s.url}/api/health")

    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["live"], body["ready"]) == ("error", True, False)
    assert body["components"]["engine"] == {
        "status": "error",
        "detail": "no batch committed for 42 s",
    }
    assert body["components"]["simulator"]["status"] == "ok"


def test_a_probe_that_raises_is_reported_not_fatal(tmp_path: Path) -> None:
    def broken() -> str | None:
        raise RuntimeError("engine handle gone")

    with serve(
        tmp_path, ManualClock(NOW), models=FixedModels(tiny_model()), probes={"engine": broken}
    ) as s:
        response = httpx.get(f"{s.url}/api/health")

    assert response.status_code == 503
    assert "RuntimeError: engine handle gone" in response.json()["components"]["engine"]["detail"]


def test_a_probe_that_hangs_is_reported_and_health_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops_routes, "HEALTH_DEADLINE_S", 0.2)
    released = threading.Event()
    calls = []

    def stuck() -> str | None:
        calls.append(1)
        released.wait(30)
        return None

    with serve(
        tmp_path, ManualClock(NOW), models=FixedModels(tiny_model()), probes={"engine": stuck}
    ) as s:
        first = httpx.get(f"{s.url}/api/health", timeout=10)
        again = httpx.get(f"{s.url}/api/health", timeout=10)
        started = len(calls)
        released.set()
        answered = httpx.get(f"{s.url}/api/health", timeout=10)

    for hung in (first, again):
        assert hung.status_code == 503
        engine = hung.json()["components"]["engine"]
        assert engine == {"status": "error", "detail": "no answer within 0.2 s"}
        assert hung.json()["components"]["store"]["status"] == "ok"
    assert started == 1  # the hanging run was waited for again, not started twice
    assert answered.status_code == 200


def test_a_missing_model_is_503_for_health_predict_and_drift(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW), models=MissingModels()) as s:
        health = httpx.get(f"{s.url}/api/health")
        predict = httpx.post(
            f"{s.url}/api/predict",
            headers=s.json_auth,
            json={"humidity": 60.0, "noise_level": 50.0, "temperature": 25.0},
        )
        drift = httpx.get(f"{s.url}/api/check_drift_retrain")
        stats = httpx.get(f"{s.url}/api/stats")

    assert health.status_code == 503
    assert "alias 'champion'" in health.json()["components"]["model"]["detail"]
    assert predict.status_code == drift.status_code == 503
    assert "no model available" in predict.json()["detail"]
    assert stats.status_code == 200
    assert stats.json()["model_version"] is None


def test_no_model_source_at_all_is_503_with_a_message(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW), models=None) as s:
        predict = httpx.post(
            f"{s.url}/api/predict",
            headers=s.json_auth,
            json={"humidity": 60.0, "noise_level": 50.0, "temperature": 25.0},
        )

    assert predict.status_code == 503
    assert "no model is configured" in predict.json()["detail"]


def test_a_closed_bus_and_a_closed_store_are_reported(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW), models=FixedModels(tiny_model())) as s:
        s.bus.close()
        s.store.close()
        health = httpx.get(f"{s.url}/api/health")
        anomalies = httpx.get(f"{s.url}/api/latest_anomalies")

    assert health.status_code == 503
    components = health.json()["components"]
    assert components["bus"] == {"status": "error", "detail": "the bus is closed"}
    assert "closed" in components["store"]["detail"]
    assert anomalies.status_code == 503
    assert anomalies.json()["detail"] == "store unavailable: the store is closed"


def test_stats_sum_up_the_store(client: httpx.Client) -> None:
    body = client.get("/api/stats").json()

    assert body["now_ms"] == NOW
    assert body["stations"] == 4
    assert body["readings"] == 600 + 5 + 3 + 40
    assert body["anomalies"] == 3 + 1 + 1
    assert body["dead_letters"] == 2
    assert body["model_version"] == "90e6bef02af84f3186e0e068e9fa4e4d"
    assert body["registry_version"] == "3"
    assert type(body["ingest_rate"]) is float
    assert [s["name"] for s in body["sensors"]] == ["temperature", "humidity", "noise_level"]


def test_stats_report_the_ingest_rate(seeded: Served, client: httpx.Client) -> None:
    seeded.ctx.metrics.ingest_rate.add(250)
    try:
        assert client.get("/api/stats").json()["ingest_rate"] == 25.0  # over a 10 s window
    finally:
        seeded.ctx.clock.advance(11)  # type: ignore[attr-defined]
        assert client.get("/api/stats").json()["ingest_rate"] == 0.0
        seeded.ctx.clock.advance(-11)  # type: ignore[attr-defined]


def test_dead_letters_newest_first_with_payload_text(client: httpx.Client) -> None:
    letters = client.get("/api/dead_letters").json()

    assert [d["source"] for d in letters] == ["faultline.readings/0/2", "faultline.readings/0/1"]
    assert letters[0]["received_at"] == "2026-01-01T01:00:00.000Z"
    assert letters[0]["reason"] == "malformed JSON #2"
    assert letters[0]["payload"] == "\x00not json 2"
    assert len(client.get("/api/dead_letters", params={"limit": 1}).json()) == 1


def test_metrics_are_prometheus_text(seeded: Served, client: httpx.Client) -> None:
    seeded.ctx.metrics.readings.inc(7)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for name in (
        "faultline_readings_total 7.0",
        "faultline_anomalies_total",
        "faultline_dead_letters_total",
        "faultline_batch_seconds_bucket",
        "faultline_ingest_to_verdict_seconds_bucket",
        "faultline_http_ingested_total",
    ):
        assert name in text


def test_the_dashboard_and_its_assets_are_served(client: httpx.Client) -> None:
    page = client.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
