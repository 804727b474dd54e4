"""The contract every detector keeps (see faultline.detect.base), run on each registered one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from faultline.detect.base import Scores
from faultline.schema import STATION_ID, empty_readings
from tests.detect.conftest import DETECTOR_FACTORIES, SENSORS, STDS, DetectorFactory, normal_frame


@pytest.fixture(params=DETECTOR_FACTORIES, ids=lambda f: f.id)
def factory(request: pytest.FixtureRequest) -> DetectorFactory:
    return request.param


def check_shape(scores: Scores, n: int) -> None:
    """Invariants of any output: aligned, typed, and no verdict means no anomaly."""
    assert scores.score.shape == scores.is_anomaly.shape == scores.sensor_mask.shape == (n,)
    assert scores.score.dtype == np.float64
    assert scores.is_anomaly.dtype == bool
    assert scores.sensor_mask.dtype == np.int64
    assert not scores.is_anomaly[np.isnan(scores.score)].any()
    assert (scores.sensor_mask >= 0).all()
    assert (scores.sensor_mask < 1 << len(SENSORS)).all()


def occurrence(frame: pd.DataFrame) -> np.ndarray:
    return frame.groupby(STATION_ID, sort=False).cumcount().to_numpy()


def test_same_input_gives_identical_scores(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=6, rounds=60, seed=1)
    first = factory.build().process(frame)
    second = factory.build().process(frame)
    check_shape(first, len(frame))
    np.testing.assert_array_equal(first.score, second.score)
    np.testing.assert_array_equal(first.is_anomaly, second.is_anomaly)
    np.testing.assert_array_equal(first.sensor_mask, second.sensor_mask)
    assert np.isfinite(first.score).sum() > len(frame) // 2


def test_snapshot_round_trip_continues_exactly(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=5, rounds=80, seed=2)
    frame.loc[frame.index[-3], list(SENSORS)] += 12 * STDS
    uninterrupted = factory.build().process(frame)
    half = len(frame) // 2
    before = factory.build()
    before.process(frame.iloc[:half])
    snapshot = json.loads(json.dumps(before.snapshot(), allow_nan=False))
    after = factory.build()
    after.restore(snapshot)
    resumed = after.process(frame.iloc[half:])
    np.testing.assert_array_equal(resumed.score, uninterrupted.score[half:])
    np.testing.assert_array_equal(resumed.is_anomaly, uninterrupted.is_anomaly[half:])
    np.testing.assert_array_equal(resumed.sensor_mask, uninterrupted.sensor_mask[half:])
    assert np.isfinite(resumed.score).all()
    assert resumed.is_anomaly[-3]


def test_no_verdict_during_warmup_even_for_a_spike(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=4, rounds=factory.warmup + 10, seed=3)
    first_rows = np.flatnonzero(occurrence(frame) == 0)
    frame.loc[frame.index[first_rows], list(SENSORS)] += 20 * STDS
    scores = factory.build().process(frame)
    check_shape(scores, len(frame))
    warming = occurrence(frame) < factory.warmup
    assert np.isnan(scores.score[warming]).all()
    assert not scores.is_anomaly[warming].any()
    assert np.isfinite(scores.score[~warming]).all()
    spiked_after_warmup = first_rows[~warming[first_rows]]
    assert scores.is_anomaly[spiked_after_warmup].all()


@pytest.mark.parametrize("how", ["nan_column", "absent_column", "scattered"])
def test_missing_sensors_give_no_verdict_for_what_is_missing(
    factory: DetectorFactory, how: str
) -> None:
    frame = normal_frame(stations=4, rounds=factory.warmup + 30, seed=4)
    spike = len(frame) - 2
    frame.loc[spike, list(SENSORS)] += 15 * STDS
    missing = np.zeros((len(frame), len(SENSORS)), bool)
    if how == "nan_column":
        frame["humidity"] = np.nan
        missing[:, 1] = True
    elif how == "absent_column":
        frame = frame.drop(columns="humidity")
        missing[:, 1] = True
    else:
        missing = np.random.default_rng(4).random(missing.shape) < 0.3
        missing[spike] = False
        for i, name in enumerate(SENSORS):
            frame.loc[missing[:, i], name] = np.nan
    scores = factory.build().process(frame)
    check_shape(scores, len(frame))
    for i in range(len(SENSORS)):
        assert not (scores.sensor_mask[missing[:, i]] >> i & 1).any()
    assert np.isnan(scores.score[missing.all(axis=1)]).all()
    late_and_complete = ~missing.any(axis=1) & (occurrence(frame) >= factory.warmup + 25)
    assert np.isfinite(scores.score[late_and_complete]).all()
    if np.isfinite(scores.score[spike]):
        assert scores.is_anomaly[spike]
        assert scores.sensor_mask[spike] > 0


def test_non_finite_readings_do_not_crash_or_corrupt_later_scores(
    factory: DetectorFactory,
) -> None:
    clean = normal_frame(stations=3, rounds=factory.warmup + 30, seed=5)
    expected = factory.build().process(clean)
    rng = np.random.default_rng(5)
    bad = clean.iloc[::7].copy()
    for name in SENSORS:
        bad[name] = rng.choice([np.nan, np.inf, -np.inf], len(bad))
    nan_only = clean.iloc[3::11].copy()
    nan_only[list(SENSORS)] = np.nan
    # Sorting the shared index puts each bad reading right after the clean one it copies.
    parts = {"clean": clean, "bad": bad, "nan": nan_only}
    mixed = pd.concat([p.assign(kind=k) for k, p in parts.items()]).sort_index(kind="stable")
    kind = mixed.pop("kind").to_numpy()
    got = factory.build().process(mixed.reset_index(drop=True))
    check_shape(got, len(mixed))
    np.testing.assert_array_equal(got.score[kind == "clean"], expected.score)
    np.testing.assert_array_equal(got.is_anomaly[kind == "clean"], expected.is_anomaly)
    np.testing.assert_array_equal(got.sensor_mask[kind == "clean"], expected.sensor_mask)
    assert np.isnan(got.score[kind == "nan"]).all()
    assert not got.is_anomaly[kind == "nan"].any()


@pytest.mark.parametrize("sign", [1, -1])
def test_higher_score_means_more_anomalous(factory: DetectorFactory, sign: int) -> None:
    # Every sensor of the reading is off by 10 sigma: seed 000's forest saturates on a spike in
    # one sensor alone (it scores like a 4-sigma one, below the most unusual normal readings).
    frame = normal_frame(stations=5, rounds=factory.warmup + 60, seed=6)
    spiked = np.flatnonzero(occurrence(frame) == factory.warmup + 40)[[1, 3]]
    frame.loc[frame.index[spiked], list(SENSORS)] += sign * 10 * STDS
    scores = factory.build().process(frame)
    normal = np.ones(len(frame), bool)
    normal[spiked] = False
    normal &= np.isfinite(scores.score)
    assert scores.score[spiked].min() > scores.score[normal].max()
    assert scores.is_anomaly[spiked].all()
    assert (scores.sensor_mask[spiked] > 0).all()


def test_stations_are_independent(factory: DetectorFactory) -> None:
    both = normal_frame(stations=2, rounds=factory.warmup + 30, seed=7)
    other = both[STATION_ID] == "s001"
    both.loc[other, "temperature"] += 30 * STDS[0]  # wild data in the other station
    alone = both[~other]
    together = factory.build().process(both)
    single = factory.build().process(alone)
    np.testing.assert_array_equal(together.score[~other.to_numpy()], single.score)
    np.testing.assert_array_equal(together.is_anomaly[~other.to_numpy()], single.is_anomaly)


def test_empty_frame(factory: DetectorFactory) -> None:
    detector = factory.build()
    empty = empty_readings(SENSORS)
    for scores in (detector.process(empty), detector.score(empty)):
        check_shape(scores, 0)
    detector.learn(empty)
    restored = factory.build()
    restored.restore(json.loads(json.dumps(detector.snapshot())))
    frame = normal_frame(stations=2, rounds=factory.warmup + 5, seed=8)
    np.testing.assert_array_equal(
        restored.process(frame).score, factory.build().process(frame).score
    )
