"""The model routes over the real Lifecycle: a real MLflow registry in a temporary directory
(small forests), a SQLite store of readings whose humidity drifted one standard deviation.

Three stations, one reading a second for 30 minutes up to the clock's now: retraining fits on
the first 20 minutes, the gate judges on the last 10 (tests/models/test_lifecycle.py's setup).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from faultline.clock import ManualClock
from faultline.config import Settings, load_settings
from faultline.models.champion import model_registry
from faultline.models.isolation_forest import train_isolation_forest
from faultline.models.lifecycle import Lifecycle
from faultline.store import SqliteStore
from tests.api.helpers import Served, serve
from tests.contract.batches import SENSORS, T0, reading_frame, write_batch
from tests.models.conftest import normal_readings

N = 1800  # readings per station
NOW = T0 + N * 1000
WAIT_S = 120.0


def settings(data_dir: Path) -> Settings:
    return load_settings(
        data_dir=data_dir,
        model={"n_estimators": 25, "train_samples": 1000, "seed": 3, "contamination": 0.01},
        lifecycle={
            "gate_window_s": 600,
            "train_window_s": 1200,
            "gate_faults": 40,
            "gate_max_readings": 5000,
            "drift_sample": 1000,
        },
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = settings(tmp_path / "data")
    store = SqliteStore(tmp_path / "faultline.db")
    ts = T0 + np.arange(N) * 1000
    for k, station in enumerate(("line_a-1", "line_a-2", "line_b-1")):
        values = normal_readings(N, seed=10 + k, shift={"humidity": 1.0}).to_numpy()
        store.write(write_batch(reading_frame(station, ts, values=values)))
    registry = model_registry(s)
    normal = normal_readings(2000, seed=1)
    pipeline = train_isolation_forest(normal, SENSORS, n_estimators=25, contamination=0.01, seed=0)
    registry.register(pipeline, SENSORS, normal, {"contamination": "0.01"})
    clock = ManualClock(NOW)
    lifecycle = Lifecycle(s, store, registry, clock)
    with serve(
        tmp_path, clock, models=registry, settings=s, store=store, lifecycle=lifecycle
    ) as served:
        yield served


def finished(client: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        answer: dict = client.get(f"/api/models/jobs/{job_id}").json()
        if answer["state"] in ("done", "failed") or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_check_drift_retrain_checks_retrains_gates_and_promotes(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=served.json_auth, timeout=WAIT_S) as client:
        anonymous = httpx.get(f"{served.url}/api/check_drift_retrain", timeout=WAIT_S).json()
        body = client.get("/api/check_drift_retrain").json()
        models = client.get("/api/models").json()

    # Without a token: the check only, recorded.
    assert anonymous["drift_detected"] is True
    assert anonymous["retrained"] is False
    assert "need an admin token" in anonymous["msg"]
    assert {s for s, d in anonymous["sensors"].items() if d["drifted"]} == {"humidity"}
    # As admin: the whole cycle.
    assert body["drift_detected"] is True
    assert (body["retrained"], body["promoted"]) == (True, True), body["msg"]
    assert body["challenger"]["version"] == "2"
    assert body["gate"]["passed"] is True
    assert body["gate"]["champion_version"] == "1"
    assert body["model_version"] == body["challenger"]["run_id"]
    assert "passed the gate" in body["msg"]
    assert body["sensors"]["humidity"]["shift"] > 0.5
    assert models["champion"] == "2"
    assert [v["version"] for v in models["versions"]] == ["2", "1"]
    assert models["versions"][0]["compiled"] == "logged"
    assert models["versions"][0]["gate"]["passed"] is True
    (change,) = models["history"]
    assert (change["operation"], change["from_version"], change["to_version"]) == (
        "promote",
        "1",
        "2",
    )
    assert change["actor"] == "tests-admin"
    assert models["drift"]["model_version"] == "1"
    assert models["drift"]["drift_detected"] is True
    metrics = served.ctx.metrics.exposition().decode()
    assert "faultline_model_drift_detected 1.0" in metrics


def test_retrain_job_then_promote_and_rollback(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=served.json_auth, timeout=WAIT_S) as client:
        started = client.post("/api/models/retrain", json={"stations": "line_a-*"})
        busy = client.post("/api/models/retrain")
        job = finished(client, started.json()["id"])
        unknown = client.post("/api/models/9/promote", json={"reason": "x"})
        promoted = client.post("/api/models/2/promote", json={"reason": "humidity drifted"})
        again = client.post("/api/models/2/promote", json={"reason": "again"})
        back = client.post("/api/models/rollback", json={"reason": "test the rollback"})
        refused = client.post("/api/models/rollback", json={"reason": "further"})
        models = client.get("/api/models").json()

    assert started.status_code == 202
    # Training takes seconds: the second request finds the first one's job still running.
    assert busy.status_code == 409
    assert started.json()["id"] in busy.json()["detail"]
    assert job["state"] == "done", job["error"]
    assert job["result"]["version"] == "2"
    assert job["params"]["stations"] == "line_a-*"
    assert job["gate"]["passed"] is True, job["gate"]["reason"]
    assert unknown.status_code == 404
    assert promoted.status_code == 200
    assert (promoted.json()["from_version"], promoted.json()["to_version"]) == ("1", "2")
    assert again.status_code == 409
    assert "already serves" in again.json()["detail"]
    assert back.status_code == 200
    assert (back.json()["operation"], back.json()["to_version"]) == ("rollback", "1")
    assert refused.status_code == 409
    assert models["champion"] == "1"
    assert [c["operation"] for c in models["history"]] == ["rollback", "promote"]
    assert models["challengers"] == ["2"]
