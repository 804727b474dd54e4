"""POST /api/predict is bounded: excess predictions are 429, and the rest of the API answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faultline.clock import ManualClock
from faultline.config import load_settings
from faultline.models.base import ModelInfo
from tests.api.conftest import NOW
from tests.api.helpers import FixedModels, Served, serve, tiny_model

FEATURES = {"temperature": 25.0, "humidity": 60.0, "noise_level": 50.0}
SLOTS = 2
WAIT_S = 30  # for a failing test to fail rather than hang; nothing is timed


class HeldModel:
    """The tiny model, whose scoring waits until the test lets it go."""

    def __init__(self) -> None:
        self.inner = tiny_model()
        self.release = threading.Event()
        self._inside = 0
        self._changed = threading.Condition()

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    @property
    def sensors(self) -> tuple[str, ...]:
        return self.inner.sensors

    @property
    def reference(self) -> pd.DataFrame:
        return self.inner.reference

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        return self.inner.anomaly_score(features)

    def is_anomaly(self, features: np.ndarray) -> np.ndarray:
        with self._changed:
            self._inside += 1
            self._changed.notify_all()
        assert self.release.wait(WAIT_S), "the test never released the model"
        return self.inner.is_anomaly(features)

    def wait_inside(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._inside >= count, WAIT_S)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Served, HeldModel]]:
    model = HeldModel()
    settings = load_settings(data_dir=tmp_path / "data", api={"predict_concurrency": SLOTS})
    with serve(tmp_path, ManualClock(NOW), models=FixedModels(model), settings=settings) as s:
        try:
            yield s, model
        finally:
            model.release.set()


def test_predictions_beyond_the_limit_are_429_while_the_api_keeps_answering(
    held: tuple[Served, HeldModel],
) -> None:
    served, model = held
    with served.client() as client, ThreadPoolExecutor(max_workers=48) as pool:
        scoring = [pool.submit(client.post, "/api/predict", json=FEATURES) for _ in range(SLOTS)]
        model.wait_inside(SLOTS)  # every slot is taken, and held

        burst = [pool.submit(client.post, "/api/predict", json=FEATURES) for _ in range(40)]
        answers = [f.result() for f in burst]
        health = client.get("/api/health")
        stations = client.get("/api/stations")

        assert [a.status_code for a in answers] == [429] * 40
        assert answers[0].headers["retry-after"] == "1"
        assert f"{SLOTS} predictions" in answers[0].json()["detail"]
        assert health.status_code == 200, health.text
        assert stations.status_code == 200
        assert all(not f.done() for f in scoring)

        model.release.set()
        assert [f.result().status_code for f in scoring] == [200] * SLOTS
    # Slots are given back: the next prediction is scored.
    with served.client() as client:
        assert client.post("/api/predict", json=FEATURES).status_code == 200
