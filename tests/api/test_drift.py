"""GET /api/check_drift_retrain runs the real drift check over what the store holds, also in a
process without a model lifecycle (and says that it cannot retrain there)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from faultline.clock import ManualClock
from faultline.config import DEFAULT_SENSORS
from tests.api.conftest import NOW
from tests.api.helpers import SENSORS, FixedModels, serve, tiny_model
from tests.contract.batches import reading_frame, write_batch

STD = np.array([DEFAULT_SENSORS[s].std for s in SENSORS])
MEAN = np.array([DEFAULT_SENSORS[s].mean for s in SENSORS])


def _check_after_writing(tmp_path: Path, values: np.ndarray | None) -> dict:
    with serve(tmp_path, ManualClock(NOW), models=FixedModels(tiny_model())) as s:
        if values is not None:
            n = len(values)
            stations = [f"s-{i % 25:02d}" for i in range(n)]
            s.store.write(
                write_batch(reading_frame(stations, NOW - 1000 * (n - np.arange(n)), values=values))
            )
        response = httpx.get(f"{s.url}/api/check_drift_retrain", timeout=30)
    assert response.status_code == 200
    return response.json()


def test_readings_like_the_training_data_are_no_drift(tmp_path: Path) -> None:
    values = np.random.default_rng(5).normal(MEAN, STD, size=(1000, 3))

    body = _check_after_writing(tmp_path, values)

    assert body["drift_detected"] is False
    assert body["msg"].startswith("No model drift detected")
    assert "Retraining is not available: this process has no model lifecycle" in body["msg"]
    assert body["retrained"] is False
    assert not any(s["drifted"] for s in body["sensors"].values())


def test_a_shifted_sensor_is_drift_and_still_no_retraining(tmp_path: Path) -> None:
    shift = np.array([0.0, 2 * STD[1], 0.0])  # humidity two standard deviations up
    values = np.random.default_rng(6).normal(MEAN + shift, STD, size=(1000, 3))

    body = _check_after_writing(tmp_path, values)

    assert body["drift_detected"] is True
    assert body["msg"].startswith("Model drift detected: drift detected in humidity")
    assert body["retrained"] is False
    assert {k for k, s in body["sensors"].items() if s["drifted"]} == {"humidity"}
    assert body["recent_size"] == 1000


def test_too_few_readings_is_said_plainly(tmp_path: Path) -> None:
    body = _check_after_writing(tmp_path, None)

    assert body["drift_detected"] is False
    assert "not enough data: 0 recent readings" in body["msg"]
    assert body["sensors"] == {}
