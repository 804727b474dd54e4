"""build_detectors: the configured streaming detector, then the model's when there is one."""

from __future__ import annotations

import numpy as np

from faultline.config import load_settings
from faultline.detect.factory import build_detectors
from faultline.detect.relations import RelationsDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.detect.surprise import SurpriseDetector
from tests.detect.conftest import normal_frame


def test_surprise_is_the_default_and_its_warm_up_is_no_verdict() -> None:
    settings = load_settings(detect={"warmup": 12})
    (detector,) = build_detectors(settings, None)
    assert isinstance(detector, SurpriseDetector)
    assert (detector.warmup, detector.threshold) == (12, settings.detect.surprise_threshold)
    got = detector.process(normal_frame(stations=3, rounds=20, seed=3))
    # Rows are round by round: the first 12 rounds of every station have no verdict.
    assert np.isnan(got.score[: 3 * 12]).all() and not got.is_anomaly[: 3 * 12].any()
    assert np.isfinite(got.score[3 * 12 :]).all()


def test_robust_z_on_request() -> None:
    settings = load_settings(detect={"detector": "robust_z", "threshold": 5.0})
    (detector,) = build_detectors(settings, None)
    assert isinstance(detector, RobustStreamingDetector)
    assert detector.threshold == 5.0


def test_relations_on_request() -> None:
    settings = load_settings(detect={"detector": "relations", "relations_threshold": 7.0})
    (detector,) = build_detectors(settings, None)
    assert isinstance(detector, RelationsDetector)
    assert (detector.threshold, detector.warmup) == (7.0, settings.detect.warmup)
