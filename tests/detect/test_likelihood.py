"""Anomaly likelihood and hysteresis alarms: calibration, one alarm per fault, no flicker."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from faultline.detect.likelihood import Alarm, AlarmedDetector, AnomalyLikelihood, probability
from faultline.detect.robust import RobustStreamingDetector
from tests.detect.frames import station_frame


def stations(n: int, name: str = "s1") -> np.ndarray:
    return np.full(n, name, dtype=object)


def runs(flags: np.ndarray) -> int:
    """How many separate runs of True."""
    return int(np.count_nonzero(np.diff(np.r_[0, flags.astype(int)]) == 1))


def test_a_long_fault_is_one_alarm() -> None:
    # A level that jumps above `on` and then wanders between `off` and `on` for 500 readings,
    # dipping below `off` only once: one alarm, on until `clear` readings after the level falls.
    rng = np.random.default_rng(0)
    level = np.r_[np.zeros(50), 5.0, rng.uniform(2.1, 3.9, 499), np.zeros(50)]
    level[55] = 0.5  # inside min_duration: does not end the alarm
    alarm = Alarm(on=4.0, off=2.0, min_duration=30, clear=10)
    active, onset = alarm.update(stations(600), level)
    assert runs(active) == 1
    assert np.flatnonzero(onset).tolist() == [50]
    assert active[50:559].all() and not active[559:].any()


def test_a_level_hovering_at_the_on_threshold_does_not_flicker() -> None:
    # Crossing `on` every other reading would be 100 alarms without hysteresis.
    level = np.tile([4.5, 3.5], 100)
    active, onset = Alarm(on=4.0, off=2.0, min_duration=5).update(stations(200), level)
    assert onset.sum() == 1
    assert active.all()


def test_an_alarm_ends_below_off_after_the_minimum_duration_and_can_start_again() -> None:
    level = np.r_[5.0, np.ones(9), 5.0, np.ones(3)]
    alarm = Alarm(on=4.0, off=2.0, min_duration=4, clear=2)
    active, onset = alarm.update(stations(14), level)
    # On at 0 (age 1 after it); readings 1..3 are quiet but inside the minimum duration; at
    # reading 4 the alarm is 4 old and 4 quiet readings exceed `clear`: off.
    assert active.tolist()[:5] == [True, True, True, True, False]
    assert np.flatnonzero(onset).tolist() == [0, 10]


def test_an_alarm_waits_for_clear_quiet_readings_in_a_row() -> None:
    # Quiet, loud, quiet, quiet, quiet: the loud reading restarts the count.
    level = np.array([5.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    active, _ = Alarm(on=4.0, off=2.0, min_duration=1, clear=3).update(stations(7), level)
    assert active.tolist() == [True, True, True, True, True, False, False]


def test_no_verdict_neither_starts_nor_ends_an_alarm() -> None:
    level = np.array([np.nan, 5.0, np.nan, np.nan, 0.0])
    active, onset = Alarm(on=4.0, off=2.0, min_duration=1, clear=1).update(stations(5), level)
    assert active.tolist() == [False, True, True, True, False]
    assert onset.tolist() == [False, True, False, False, False]


def test_alarms_are_per_station_and_peek_changes_nothing() -> None:
    alarm = Alarm(on=4.0, off=2.0, min_duration=3)
    alarm.update(np.array(["a", "b"], dtype=object), np.array([5.0, 0.0]))
    before = alarm.snapshot()
    active, onset = alarm.peek(np.array(["a", "b", "new"], dtype=object), np.array([0.0, 5.0, 9]))
    assert active.tolist() == [True, True, True]
    assert onset.tolist() == [False, True, True]
    assert alarm.snapshot() == before == {"a": {"age": 1, "quiet": 0}, "b": {"age": 0, "quiet": 0}}


def test_hysteresis_needs_off_below_on() -> None:
    with pytest.raises(ValueError, match="off < on"):
        Alarm(on=2.0, off=2.0)
    with pytest.raises(ValueError, match="clear >= 1"):
        Alarm(clear=0)


def test_surprise_is_calibrated_on_stationary_scores() -> None:
    # Raw scores from a stationary process: the surprise should rarely exceed 3 (p = 0.001);
    # the short-window means are not exactly Gaussian, so allow a few times that.
    rng = np.random.default_rng(1)
    raw = np.abs(rng.normal(size=20_000))
    surprise = AnomalyLikelihood(short=5, long=2000, warmup=200).update(stations(20_000), raw)
    settled = surprise[1000:]
    assert np.isnan(surprise[:200]).all() and np.isfinite(settled).all()
    assert (settled >= 3).mean() < 0.005
    assert 0.2 < np.median(probability(settled)) < 0.8


def test_a_burst_of_high_raw_scores_is_very_surprising() -> None:
    rng = np.random.default_rng(2)
    raw = np.r_[np.abs(rng.normal(size=1000)), np.full(10, 6.0)]
    surprise = AnomalyLikelihood(short=5, warmup=100).update(stations(1010), raw)
    assert surprise[-1] > 10
    assert probability(surprise[-1:])[0] == pytest.approx(1.0)


def test_likelihood_state_is_per_station_and_survives_a_snapshot() -> None:
    rng = np.random.default_rng(3)
    ids = np.tile(np.array(["a", "b"], dtype=object), 300)
    raw = np.abs(rng.normal(size=600))
    raw[ids == "b"] *= 10
    whole = AnomalyLikelihood(short=4, warmup=50).update(ids, raw)
    first = AnomalyLikelihood(short=4, warmup=50)
    first.update(ids[:301], raw[:301])
    second = AnomalyLikelihood(short=4, warmup=50)
    second.restore(json.loads(json.dumps(first.snapshot())))
    np.testing.assert_allclose(second.update(ids[301:], raw[301:]), whole[301:])
    alone = AnomalyLikelihood(short=4, warmup=50).update(ids[ids == "a"], raw[ids == "a"])
    np.testing.assert_allclose(alone, whole[ids == "a"])


def readings(values: np.ndarray) -> pd.DataFrame:
    return station_frame({"t": values})


def alarmed() -> AlarmedDetector:
    return AlarmedDetector(
        RobustStreamingDetector(["t"], warmup=30),
        AnomalyLikelihood(short=5, long=500, warmup=100),
        Alarm(on=5.0, off=1.0, min_duration=50, clear=100),
    )


def test_a_detector_with_alarms_raises_one_alarm_for_a_long_noisy_fault() -> None:
    # Gaussian noise, then 300 readings of much wilder noise (seed 003's failing asset): the raw
    # scores go up and down throughout the fault, the alarm goes on once.
    rng = np.random.default_rng(4)
    values = np.r_[rng.normal(0, 1, 1000), rng.exponential(8, 300) - 8, rng.normal(0, 1, 200)]
    got = alarmed().process(readings(values))
    assert runs(got.is_anomaly) == 1
    first = int(np.argmax(got.is_anomaly))
    assert 1000 <= first < 1030
    assert got.sensor_mask[got.is_anomaly].tolist() == [1] * int(got.is_anomaly.sum())
    assert not got.is_anomaly[:1000].any()


def test_alarmed_detector_snapshot_continues_exactly() -> None:
    rng = np.random.default_rng(5)
    values = np.r_[rng.normal(0, 1, 700), rng.exponential(8, 100) - 8]
    frame = readings(values)
    whole = alarmed().process(frame)
    first = alarmed()
    first.process(frame.iloc[:720])
    second = alarmed()
    second.restore(json.loads(json.dumps(first.snapshot())))
    rest = second.process(frame.iloc[720:])
    np.testing.assert_array_equal(rest.score, whole.score[720:])
    np.testing.assert_array_equal(rest.is_anomaly, whole.is_anomaly[720:])
    np.testing.assert_array_equal(rest.sensor_mask, whole.sensor_mask[720:])
    before = json.dumps(second.snapshot())
    assert second.score(frame.iloc[:3]).score.shape == (3,)
    assert json.dumps(second.snapshot()) == before
