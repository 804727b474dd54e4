"""Simulator with injected faults → engine → SQLite → API returns those anomalies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from faultline.api.app import create_app
from faultline.api.server import ApiServer
from faultline.bus import SqliteBus
from faultline.clock import ManualClock, SystemClock
from faultline.config import Settings, load_settings
from faultline.runtime import Runtime, fault_sink
from faultline.simulate import Simulator, run_simulator
from faultline.store import FaultLabels
from faultline.store.base import LAST_MS
from tests.tokens import admin_token, bearer

STATIONS = 6
TICKS = 1800  # half an hour at 1 Hz


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        data_dir=tmp_path_factory.mktemp("e2e"),
        model={"n_estimators": 50, "train_samples": 2000},
        engine={"batch_max_records": 2000, "batch_max_wait_s": 0.05},
    )


@pytest.fixture(scope="module")
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    runtime.load_model()
    runtime.start_engine()
    sim = Simulator(
        settings.sensors,
        stations=STATIONS,
        seed=7,
        faults_per_station_hour=12,
        fault_weights={"spike": 2, "level_shift": 1, "malfunction": 1},
    )
    # Event times from an hour ago up to half an hour ago: recent enough to be accepted.
    clock = ManualClock(start_ms=SystemClock().now_ms() - 3_600_000)
    run_simulator(
        sim,
        runtime.bus,
        settings.readings_topic,
        clock=clock,
        rate_hz=1.0,
        stop=threading.Event(),
        on_labels=fault_sink(runtime.store, settings.sensor_names),
        max_ticks=TICKS,
    )
    bus = runtime.bus
    assert isinstance(bus, SqliteBus)  # the embedded default
    deadline = time.monotonic() + 120
    while bus.lag(settings.readings_topic, settings.engine.consumer_group) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    yield runtime
    runtime.shutdown()


@pytest.fixture(scope="module")
def api(runtime: Runtime) -> Iterator[httpx.Client]:
    ctx = runtime.app_context()
    headers = bearer(admin_token(ctx.tokens))
    with (
        ApiServer(create_app(ctx), port=0) as server,
        httpx.Client(base_url=server.url, headers=headers) as client,
    ):
        yield client


def test_every_reading_was_processed(api: httpx.Client) -> None:
    stations = api.get("/api/stations").json()["stations"]
    assert len(stations) == STATIONS
    readings = sum(s["readings"] for s in stations)
    dead = api.get("/api/dead_letters?limit=10").json()
    assert dead == [] or all("reason" in d for d in dead)
    # Dropout is not among the injected kinds, so every tick of every station is a reading.
    assert readings == STATIONS * TICKS


def test_injected_faults_come_back_as_anomalies(runtime: Runtime, api: httpx.Client) -> None:
    labels = runtime.store.query(FaultLabels(0, LAST_MS))
    assert len(labels) >= 10, "the simulation should have injected faults"
    anomalies = api.get("/api/latest_anomalies", params={"limit": 1000}).json()
    assert anomalies, "no anomalies came back"
    flagged: dict[str, list[int]] = {}
    for row in anomalies:
        flagged.setdefault(row["station_id"], []).append(row["ts_ms"])

    def detected(label: object) -> bool:
        times = flagged.get(label.station_id, [])  # type: ignore[attr-defined]
        start, end = label.start_ts, label.end_ts + 5000  # type: ignore[attr-defined]
        return any(start <= t <= end for t in times)

    # Spikes inside a warm-up window can be missed; nearly all the rest must be found.
    found = [detected(label) for label in labels]
    assert sum(found) / len(found) >= 0.8, f"{sum(found)} of {len(found)} faults detected"


def test_anomalies_point_at_the_faulty_sensor(runtime: Runtime, api: httpx.Client) -> None:
    labels = runtime.store.query(FaultLabels(0, LAST_MS))
    anomalies = api.get("/api/latest_anomalies", params={"limit": 1000}).json()
    hits = 0
    for label in labels:
        for row in anomalies:
            if (
                row["station_id"] == label.station_id
                and label.start_ts <= row["ts_ms"] <= label.end_ts
                and label.sensor in row["sensors"]
            ):
                hits += 1
                break
    assert hits >= 0.7 * len(labels)


def test_outliers_count_and_metrics_agree(api: httpx.Client) -> None:
    count = api.get("/api/outliers_count", params={"time_range": "2h"}).json()
    assert count["time_range"] == "2h"
    assert count["outliers_count"] > 0
    metrics = api.get("/metrics").text
    assert f"faultline_readings_total {float(STATIONS * TICKS)}" in metrics


def test_health_reports_every_component(api: httpx.Client) -> None:
    health = api.get("/api/health")
    assert health.status_code == 200
    components = health.json()["components"]
    assert {"store", "bus", "model", "engine"} <= set(components)
