"""The detector registry: build_detectors is the configured streaming detector, then the model's
when there is one; `faultline eval` builds the same set from the same settings."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from faultline.config import DetectSettings, load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import (
    DEPLOYED,
    DETECTORS,
    build_detector,
    build_detectors,
    model_detector,
)
from faultline.detect.pipeline import Ensemble
from faultline.detect.relations import RelationsDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.detect.surprise import SurpriseDetector
from faultline.evaluate.detectors import eval_detector, fit_model
from faultline.schema import IS_ANOMALY, SENSOR_MASK, score_column
from tests.detect.conftest import SENSORS, STDS, normal_frame, small_model


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


def test_every_streaming_choice_of_the_settings_is_a_registry_kind() -> None:
    field = DetectSettings.model_fields["detector"]
    for choice in typing.get_args(field.annotation):
        settings = load_settings(detect={"detector": choice})
        (detector,) = build_detectors(settings, None)
        assert detector.name == DETECTORS[choice].name == choice


def test_unknown_kinds_and_a_forest_without_model_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        build_detector("nope", load_settings())
    with pytest.raises(ValueError, match="scores with a trained model"):
        build_detector("isolation_forest", load_settings())


def test_the_forest_votes_or_only_scores_as_the_settings_say() -> None:
    frame = normal_frame(stations=2, rounds=40, seed=5)
    frame.loc[frame.index[-1], list(SENSORS)] += 12 * STDS
    voting = model_detector(load_settings(model={"forest_verdicts": True}), small_model())
    scoring = model_detector(load_settings(model={"forest_verdicts": False}), small_model())
    votes, scores = voting.process(frame), scoring.process(frame)
    np.testing.assert_array_equal(votes.score, scores.score)
    assert votes.is_anomaly[-1] and votes.sensor_mask[-1]
    assert not scores.is_anomaly.any() and not scores.sensor_mask.any()


def test_the_engine_and_eval_build_the_same_detectors_from_the_same_settings() -> None:
    # What `faultline up` runs (the pipeline of build_detectors over the champion) and what
    # `faultline eval` measures by default (the deployed kind over a model of its training
    # rows) give the same verdicts, reading for reading, for the same settings and model.
    settings = load_settings(
        detect={"warmup": 12, "calibrating": 40},
        model={"n_estimators": 20, "forest_verdicts": True},
    )
    training = normal_frame(stations=1, rounds=3000, seed=21)
    spec = eval_detector(DEPLOYED, settings)
    measured = spec.build(SENSORS, training)
    assert spec.needs_training and isinstance(measured, Ensemble)
    model = fit_model(settings, SENSORS, training)
    pipeline = DetectorPipeline(build_detectors(settings, model))
    assert [type(d) for d in measured.members] == [type(d) for d in pipeline.detectors]
    frame = normal_frame(stations=4, rounds=200, seed=22)
    frame.loc[frame.index[[500, 650]], list(SENSORS)] += 10 * STDS
    got = measured.process(frame)
    ran = pipeline.run(frame)
    np.testing.assert_array_equal(got.is_anomaly, ran[IS_ANOMALY].to_numpy())
    np.testing.assert_array_equal(got.sensor_mask, ran[SENSOR_MASK].to_numpy())
    np.testing.assert_array_equal(got.score, ran[score_column("surprise")].to_numpy())
    assert got.is_anomaly[[500, 650]].all()
