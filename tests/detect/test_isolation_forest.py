from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from faultline.config import load_settings
from faultline.detect.factory import build_detectors
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.pipeline import DetectorPipeline
from faultline.detect.robust import RobustStreamingDetector
from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel
from tests.detect.conftest import SENSORS, STDS, normal_frame, small_model


class WithoutThreshold:
    """A LoadedModel that only offers the protocol: the detector must ask `is_anomaly`."""

    def __init__(self, model: SklearnModel) -> None:
        self._model = model
        self.is_anomaly_calls = 0

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def sensors(self) -> tuple[str, ...]:
        return self._model.sensors

    @property
    def reference(self) -> pd.DataFrame:
        return self._model.reference

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        return self._model.anomaly_score(features)

    def is_anomaly(self, features: np.ndarray) -> np.ndarray:
        self.is_anomaly_calls += 1
        return self._model.is_anomaly(features)


def spiky_frame() -> pd.DataFrame:
    frame = normal_frame(stations=4, rounds=50, seed=21)
    frame.loc[[10, 90], list(SENSORS)] += 9 * STDS
    frame.loc[90, "noise_level"] += 30 * STDS[2]
    return frame


def test_scores_and_verdicts_are_the_models() -> None:
    model = small_model()
    frame = spiky_frame()
    scores = IsolationForestDetector(SENSORS, model).process(frame)
    x = frame[list(SENSORS)].to_numpy()
    np.testing.assert_array_equal(scores.score, model.anomaly_score(x))
    np.testing.assert_array_equal(scores.is_anomaly, model.pipeline.predict(x) == -1)
    assert scores.is_anomaly[[10, 90]].all()


def test_a_model_without_a_threshold_is_asked_for_its_verdict() -> None:
    frame = spiky_frame()
    plain = WithoutThreshold(small_model())
    scores = IsolationForestDetector(SENSORS, plain).process(frame)
    expected = IsolationForestDetector(SENSORS, small_model()).process(frame)
    assert plain.is_anomaly_calls == 1
    np.testing.assert_array_equal(scores.is_anomaly, expected.is_anomaly)
    np.testing.assert_array_equal(scores.sensor_mask, expected.sensor_mask)


def test_the_sensor_furthest_from_the_reference_is_blamed() -> None:
    scores = IsolationForestDetector(SENSORS, small_model()).process(spiky_frame())
    assert scores.sensor_mask[90] == 1 << 2
    flagged = scores.is_anomaly
    assert (scores.sensor_mask[~flagged] == 0).all()
    assert (np.bitwise_count(scores.sensor_mask[flagged]) == 1).all()


def test_sensor_bits_follow_the_configured_order_not_the_models() -> None:
    configured = ("vibration", "noise_level", "humidity", "temperature")
    frame = spiky_frame().assign(vibration=np.nan)
    scores = IsolationForestDetector(configured, small_model()).process(frame)
    assert scores.sensor_mask[90] == 1 << 1
    assert np.isfinite(scores.score).all()


def test_rows_missing_a_model_sensor_get_no_verdict() -> None:
    frame = spiky_frame()
    frame.loc[[10, 11], "humidity"] = np.nan
    frame.loc[12, "temperature"] = np.inf
    scores = IsolationForestDetector(SENSORS, small_model()).process(frame)
    assert np.isnan(scores.score[[10, 11, 12]]).all()
    assert not scores.is_anomaly[[10, 11, 12]].any()
    assert np.isfinite(np.delete(scores.score, [10, 11, 12])).all()


def test_a_model_needing_an_unconfigured_sensor_is_refused() -> None:
    with pytest.raises(ValueError, match="unconfigured sensors \\['noise_level'\\]"):
        IsolationForestDetector(("temperature", "humidity"), small_model())


def test_version_and_snapshot_name_the_model_run(caplog: pytest.LogCaptureFixture) -> None:
    detector = IsolationForestDetector(SENSORS, small_model())
    assert detector.version == small_model().info.run_id
    assert detector.snapshot(["s000"]) == {"model_version": detector.version}
    with caplog.at_level(logging.INFO, logger="faultline.detect.isolation_forest"):
        detector.restore({"model_version": detector.version})
        assert not caplog.records
        detector.restore({"model_version": "older-run"})
    assert "older-run" in caplog.text


@pytest.mark.parametrize("snapshot", [{}, {"model_version": 3}])
def test_a_malformed_snapshot_is_refused(snapshot: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        IsolationForestDetector(SENSORS, small_model()).restore(snapshot)


def test_factory_builds_the_streaming_detector_always_and_the_forest_with_a_model() -> None:
    settings = load_settings(
        detect={"detector": "robust_z", "threshold": 5.0, "warmup": 12, "alpha": 0.05}
    )
    alone = build_detectors(settings, None)
    assert [d.name for d in alone] == ["robust_z"]
    robust = alone[0]
    assert isinstance(robust, RobustStreamingDetector)
    assert (robust.threshold, robust.warmup, robust.alpha) == (5.0, 12, 0.05)
    both = build_detectors(settings, small_model())
    assert [d.name for d in both] == ["robust_z", "isolation_forest"]
    default = build_detectors(load_settings(), small_model())
    assert [d.name for d in default] == ["surprise", "isolation_forest"]
    pipeline = DetectorPipeline(both)
    assert pipeline.model_version == small_model().info.run_id
    assert all(d.sensors == settings.sensor_names for d in both)
