"""No warm-up false alarms: a new station's first hour raises no more false verdicts than a later
hour, for the deployed set (issue 12, docs/decisions/0020)."""

from __future__ import annotations

import numpy as np

from faultline.config import DEFAULT_SENSORS, Settings, load_settings
from faultline.detect.factory import DEPLOYED
from faultline.detect.surprise import SurpriseDetector
from faultline.evaluate.detectors import eval_detector
from faultline.evaluate.replay import CHUNK_ROWS
from faultline.schema import STATION_ID
from faultline.simulate import normal_frame, simulate_frame
from tests.detect.frames import station_frame

HOURS = 3


def false_verdicts_per_hour(settings: Settings) -> np.ndarray:
    """Flagged readings per hour of station life, over 100 new fault-free stations at 1 Hz."""
    frame, labels = simulate_frame(
        DEFAULT_SENSORS, HOURS * 3600, stations=100, seed=7, faults_per_station_hour=0.0
    )
    assert not labels
    training = normal_frame(dict(DEFAULT_SENSORS), 5000, seed=1)
    detector = eval_detector(DEPLOYED, settings).build(tuple(DEFAULT_SENSORS), training)
    flagged = np.zeros(len(frame), bool)
    for start in range(0, len(frame), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        flagged[rows] = detector.process(frame.iloc[rows]).is_anomaly
    hour = frame.groupby(STATION_ID, sort=False).cumcount().to_numpy() // 3600
    return np.bincount(hour[flagged], minlength=HOURS)


def test_a_new_station_s_first_hour_is_no_worse_than_a_later_one() -> None:
    per_hour = false_verdicts_per_hour(load_settings(model={"n_estimators": 50}))
    assert per_hour[0] <= per_hour[1:].min(), per_hour  # measured [42, 62, 93]


def test_without_the_calibrating_stage_a_short_warm_up_alarms_most_in_the_first_hour() -> None:
    # The engine's settings before decision 0020 (30 readings of warm-up, nothing after):
    # the check above fails on them.
    settings = load_settings(detect={"warmup": 30, "calibrating": 0}, model={"n_estimators": 50})
    per_hour = false_verdicts_per_hour(settings)
    assert per_hour[0] > 2 * per_hour[1:].max(), per_hour


def test_a_calibrating_sensor_is_scored_but_raises_no_alarm() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(50, 2, 400)
    values[[150, 350]] += 40  # 20 sigma: once while calibrating, once after
    detector = SurpriseDetector(["x"], warmup=100, calibrating=300)
    got = detector.process(station_frame({"x": values}))
    assert np.isnan(got.score[:100]).all()
    assert got.learning is not None
    assert got.learning[100:300].all() and not got.learning[300:].any()
    assert not got.learning[:100].any()  # no score, so no verdict withheld either
    assert got.score[150] >= 4 and not got.is_anomaly[150]
    assert got.is_anomaly[350]
    # The score is the same as without the stage: only the verdict waits.
    plain = SurpriseDetector(["x"], warmup=100).process(station_frame({"x": values}))
    np.testing.assert_array_equal(got.score, plain.score)
    assert plain.is_anomaly[150]
