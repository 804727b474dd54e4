from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faultline.detect.robust import (
    CLIP_SCALES,
    SCALE_FLOOR_ABSOLUTE,
    SCALE_FLOOR_RELATIVE,
    RobustStreamingDetector,
)
from faultline.schema import STATION_ID
from tests.detect.conftest import SENSORS, STDS, normal_frame


def station_state(detector: RobustStreamingDetector, station: str) -> dict[str, list[float]]:
    state: dict[str, list[float]] = detector.snapshot([station])["stations"][station]
    return state


def test_warmup_is_exactly_the_configured_number_of_values() -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=10)
    scores = detector.process(normal_frame(stations=1, rounds=15, seed=1))
    assert np.isnan(scores.score[:10]).all()
    assert np.isfinite(scores.score[10:]).all()


def test_scale_estimates_sigma_on_normal_data() -> None:
    detector = RobustStreamingDetector(SENSORS, alpha=0.01)
    detector.process(normal_frame(stations=20, rounds=400, seed=2))
    scales = np.array([station_state(detector, f"s{i:03d}")["scale"] for i in range(20)])
    np.testing.assert_allclose(scales.mean(axis=0), STDS, rtol=0.1)


def test_an_outlier_is_winsorised_before_it_is_learned() -> None:
    detector = RobustStreamingDetector(SENSORS, alpha=0.02)
    frame = normal_frame(stations=1, rounds=100, seed=3)
    detector.process(frame)
    before = station_state(detector, "s000")
    spike = frame.iloc[[-1]].copy()
    spike["humidity"] = 60.0 + 1000 * STDS[1]
    scores = detector.process(spike)
    after = station_state(detector, "s000")
    assert scores.is_anomaly[0]
    assert scores.sensor_mask[0] == 1 << 1
    moved = after["location"][1] - before["location"][1]
    assert 0 < moved <= 0.02 * CLIP_SCALES * before["scale"][1] * (1 + 1e-12)
    assert after["scale"][1] <= before["scale"][1] * (1 + 0.02 * CLIP_SCALES)
    following = normal_frame(stations=1, rounds=5, seed=4)
    assert not detector.process(following).is_anomaly.any()


def test_a_level_shift_is_followed_eventually() -> None:
    detector = RobustStreamingDetector(SENSORS)
    frame = normal_frame(stations=1, rounds=600, seed=5)
    frame.loc[300:, "temperature"] += 10 * STDS[0]
    scores = detector.process(frame)
    assert scores.is_anomaly[300]
    assert not scores.is_anomaly[-100:].any()


def test_a_constant_signal_is_scored_against_the_scale_floor() -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=5)
    frame = normal_frame(stations=1, rounds=30, seed=6)
    frame[list(SENSORS)] = [25.0, 0.0, 50.0]
    scores = detector.process(frame)
    assert (scores.score[5:] == 0).all()
    assert not scores.is_anomaly.any()
    step = frame.iloc[[-1]].copy()
    step["temperature"] = 25.5
    moved = detector.score(step)
    floor = SCALE_FLOOR_ABSOLUTE + SCALE_FLOOR_RELATIVE * 25.0
    assert moved.score[0] == pytest.approx(0.5 / floor)
    assert moved.sensor_mask[0] == 1


def test_new_stations_grow_the_state_without_touching_others() -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=5)
    early = normal_frame(stations=3, rounds=20, seed=7)
    detector.process(early)
    kept = detector.snapshot()["stations"]
    late = normal_frame(stations=200, rounds=10, seed=8, station_prefix="new")
    scores = detector.process(late)
    assert np.isnan(scores.score[: 5 * 200]).all()
    snapshot = detector.snapshot()
    assert len(snapshot["stations"]) == 203
    assert {k: snapshot["stations"][k] for k in kept} == kept
    alone = RobustStreamingDetector(SENSORS, warmup=5)
    last = late[late[STATION_ID] == "new199"]
    np.testing.assert_array_equal(
        alone.process(last).score, scores.score[(late[STATION_ID] == "new199").to_numpy()]
    )


def test_several_readings_per_station_in_one_learn_call_are_taken_in_order() -> None:
    frame = normal_frame(stations=4, rounds=40, seed=9)
    at_once = RobustStreamingDetector(SENSORS, warmup=5)
    at_once.learn(frame)
    one_by_one = RobustStreamingDetector(SENSORS, warmup=5)
    for _, row in frame.groupby(frame.index // 4):
        one_by_one.learn(row)
    assert at_once.snapshot() == one_by_one.snapshot()


def test_score_does_not_change_state() -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=5)
    frame = normal_frame(stations=2, rounds=20, seed=10)
    detector.learn(frame)
    before = detector.snapshot()
    detector.score(normal_frame(stations=3, rounds=2, seed=11))
    assert detector.snapshot() == before


def test_partial_snapshot_and_restore() -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=5)
    detector.learn(normal_frame(stations=3, rounds=20, seed=12))
    part = detector.snapshot(["s001", "unknown"])
    assert list(part["stations"]) == ["s001"]
    other = RobustStreamingDetector(SENSORS, warmup=5)
    other.learn(normal_frame(stations=3, rounds=20, seed=13))
    untouched = other.snapshot(["s000", "s002"])
    other.restore(part)
    assert other.snapshot(["s001"]) == part
    assert other.snapshot(["s000", "s002"]) == untouched


def test_restore_matches_sensors_by_name() -> None:
    old = RobustStreamingDetector(["humidity", "pressure"], warmup=5)
    frame = normal_frame(stations=1, rounds=20, seed=14).assign(pressure=1000.0)
    old.learn(frame)
    new = RobustStreamingDetector(SENSORS, warmup=5)
    new.restore(old.snapshot())
    state = station_state(new, "s000")
    previous = station_state(old, "s000")
    assert state["count"] == [0, previous["count"][0], 0]
    assert state["location"][1] == previous["location"][0]


@pytest.mark.parametrize(
    "snapshot",
    [
        {},
        {"sensors": list(SENSORS)},
        {"sensors": list(SENSORS), "stations": {"a": {"count": [1, 2], "location": [0, 0]}}},
        {
            "sensors": list(SENSORS),
            "stations": {"a": {"count": [1, 2, 3], "location": [0, 0, 0], "scale": [1, 1]}},
        },
        {
            "sensors": list(SENSORS),
            "stations": {
                "a": {"count": [1, 2, 3], "location": [0, 0, float("nan")], "scale": [1, 1, 1]}
            },
        },
        {
            "sensors": list(SENSORS),
            "stations": {"a": {"count": [-1, 2, 3], "location": [0, 0, 0], "scale": [1, 1, 1]}},
        },
        {"sensors": list(SENSORS), "stations": ["a"]},
    ],
)
def test_a_malformed_snapshot_is_refused_whole(snapshot: dict[str, object]) -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=5)
    detector.learn(normal_frame(stations=1, rounds=10, seed=15))
    before = detector.snapshot()
    if isinstance(snapshot.get("stations"), dict):
        snapshot["stations"] = {
            "s000": {"count": [0] * 3, "location": [0.0] * 3, "scale": [0.0] * 3},
            **snapshot["stations"],
        }
    with pytest.raises(ValueError, match=r"snapshot|station"):
        detector.restore(snapshot)
    assert detector.snapshot() == before


def test_unknown_station_scores_nan_and_extra_columns_are_ignored() -> None:
    detector = RobustStreamingDetector(SENSORS, warmup=5)
    detector.learn(normal_frame(stations=1, rounds=10, seed=16))
    frame = normal_frame(stations=2, rounds=1, seed=17).assign(vibration=1.0)
    scores = detector.score(frame)
    assert np.isfinite(scores.score[0])
    assert np.isnan(scores.score[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0}, "threshold"),
        ({"warmup": 1}, "warmup"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1}, "alpha"),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RobustStreamingDetector(SENSORS, **kwargs)


def test_frame_index_does_not_matter() -> None:
    frame = normal_frame(stations=3, rounds=30, seed=18)
    shuffled_index = frame.set_axis(pd.Index(np.arange(len(frame))[::-1] * 7))
    a = RobustStreamingDetector(SENSORS, warmup=5).process(frame)
    b = RobustStreamingDetector(SENSORS, warmup=5).process(shuffled_index)
    np.testing.assert_array_equal(a.score, b.score)
