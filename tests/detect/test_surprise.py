"""The surprise detector: calibration across noise shapes, peaks, alarms, and its NAB score."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from faultline.detect.surprise import SurpriseDetector
from faultline.evaluate.benchmark import run_nab
from faultline.evaluate.detectors import eval_detector
from faultline.evaluate.nab import NabCorpus
from faultline.schema import STATION_ID
from tests.detect.frames import station_frame


def readings(values: np.ndarray) -> pd.DataFrame:
    columns = np.asarray(values, np.float64).reshape(len(values), -1)
    return station_frame({f"x{j}": columns[:, j] for j in range(columns.shape[1])})


def onsets(flags: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.diff(np.r_[0, flags.astype(int)]) == 1)


@pytest.mark.parametrize(
    ("noise", "most"),
    [
        (lambda rng, n: rng.normal(50, 2, n), 4),
        # Heavy tails: the exponential tail beyond the 99th percentile underestimates how often
        # a Student-t(4) reading lands far out (docs/EVALUATION.md); measured 10.
        (lambda rng, n: 50 + rng.standard_t(4, n), 12),
        (lambda rng, n: rng.exponential(3, n), 6),  # skewed; measured 5
        (lambda rng, n: np.cumsum(rng.normal(0, 1, n)), 4),  # a random walk
    ],
    ids=["normal", "student_t4", "exponential", "random_walk"],
)
def test_healthy_signals_of_any_shape_rarely_alarm(  # type: ignore[no-untyped-def]
    noise, most
) -> None:
    # 20,000 healthy readings (4 stations of 5,000): at the default threshold (surprise 4,
    # p = 1e-4) a few alarms at most, whatever the shape of the noise, because each feature is
    # judged by its own history.
    rng = np.random.default_rng(0)
    frame = (
        pd.concat(
            [
                station_frame({"x0": noise(rng, 5000)}, station=f"s{i}").assign(
                    order=np.arange(5000)
                )
                for i in range(4)
            ]
        )
        .sort_values("order", kind="stable")
        .drop(columns="order")
    )
    got = SurpriseDetector(["x0"]).process(frame.reset_index(drop=True))
    per_station = frame[STATION_ID].to_numpy()
    alarms = sum(len(onsets(got.is_anomaly[per_station == f"s{i}"])) for i in range(4))
    assert alarms <= most
    scored = got.score[np.isfinite(got.score)]
    assert (scored > 0).mean() < 0.05  # most readings are not peaks: score 0


def test_a_station_with_heavier_tails_than_its_views_assume_is_recalibrated() -> None:
    # Student-t(2) noise reaches surprise 3 far more often than once in a thousand readings; the
    # station's surprise is lowered by that excess. Measured: 19 alarms in 20,000 readings, 32
    # without the correction.
    values = 50 + np.random.default_rng(0).standard_t(2, 20_000)
    got = SurpriseDetector(["x0"]).process(readings(values))
    assert len(onsets(got.is_anomaly)) <= 24


def test_a_spike_scores_far_above_anything_healthy_and_alarms_at_once() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(20, 1, 3000)
    values[2500] += 15
    got = SurpriseDetector(["x0"]).process(readings(values))
    assert got.is_anomaly[2500]
    assert got.score[2500] > 5  # beyond 1e-5: past everything in the history, by a wide margin
    assert got.score[2500] > 1.5 * np.nanmax(np.delete(got.score, 2500))
    assert got.sensor_mask[2500] == 1


def test_a_level_shift_is_one_alarm_raised_within_a_few_readings() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(20, 1, 4000)
    values[3000:] += 6
    got = SurpriseDetector(["x0"]).process(readings(values))
    starts = onsets(got.is_anomaly)
    assert len(starts[starts >= 3000]) == 1
    assert 3000 <= starts[starts >= 3000][0] <= 3005
    assert not got.is_anomaly[100:3000].any()
    # Only the onset (and stronger escalations) carry a score: not every shifted reading.
    assert (got.score[3000:3200] > 0).sum() < 20


def test_a_frozen_sensor_alarms_within_a_few_repeats_and_its_recovery_does_not() -> None:
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(20, 1, 4000), 3)
    values[3000:3150] = values[2999]  # stuck for 150 readings
    got = SurpriseDetector(["x0"]).process(readings(values))
    starts = onsets(got.is_anomaly)
    assert len(starts) == 1 and 3000 <= starts[0] <= 3004
    # A run of repeats teaches no scale, so live readings after it are ordinary again.
    assert not got.is_anomaly[3170:].any()


def test_the_responsible_sensor_is_blamed() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (3000, 3))
    values[2600, 2] += 20
    got = SurpriseDetector(["x0", "x1", "x2"]).process(readings(values))
    assert got.is_anomaly[2600]
    assert got.sensor_mask[2600] == 0b100


def test_score_does_not_learn() -> None:
    values = np.random.default_rng(4).normal(0, 1, 500)
    detector = SurpriseDetector(["x0"])
    detector.process(readings(values[:400]))
    before = detector.snapshot()
    first = detector.score(readings(values[400:410]))
    assert detector.snapshot() == before
    np.testing.assert_array_equal(first.score, detector.score(readings(values[400:410])).score)


def test_bad_settings_and_snapshots_are_refused() -> None:
    with pytest.raises(ValueError, match="warmup"):
        SurpriseDetector(["x0"], warmup=1)
    with pytest.raises(ValueError, match="adapt"):
        SurpriseDetector(["x0"], adapt=1.5)
    detector = SurpriseDetector(["x0"])
    detector.process(readings(np.arange(10.0)))
    snapshot = detector.snapshot()
    with pytest.raises(ValueError, match="unknown sensors"):
        SurpriseDetector(["other"]).restore(snapshot)


def test_on_nab_it_beats_every_seed_baseline_by_far(nab_corpus: NabCorpus) -> None:
    # Measured 63.1 / 51.6 / 69.1 (docs/EVALUATION.md); the seeds' detectors score 0 to 20.
    scores = run_nab(nab_corpus, eval_detector("surprise")).summary()
    assert scores["standard"] > 62.5
    assert scores["reward_low_FP_rate"] > 51
    assert scores["reward_low_FN_rate"] > 68.5


FIVE_MINUTES_MS = 300_000
DAY = 288  # five-minute readings


def daily(days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five-minute readings of a signal that is high from 08:00 to 20:00 UTC, low otherwise."""
    rng = np.random.default_rng(seed)
    ts = 1_767_225_600_000 + np.arange(days * DAY, dtype=np.int64) * FIVE_MINUTES_MS
    hour = (ts // 3_600_000) % 24
    values = np.where((hour >= 8) & (hour < 20), 60.0, 20.0) + rng.normal(0, 1, len(ts))
    return ts, values


def daily_frame(ts: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    return readings(values).assign(ts=ts, received_at=ts)


def test_a_daily_pattern_is_learned_and_a_missing_rise_alarms() -> None:
    ts, values = daily(10)
    rise = 9 * DAY + 8 * 12  # 08:00 on day 10
    values[rise : rise + 36] -= 40  # the signal stays at its night level for three hours
    got = SurpriseDetector(["x0"]).process(daily_frame(ts, values))
    # Once the profile has seen each half hour on two days, the daily jumps are ordinary...
    assert not got.is_anomaly[4 * DAY : 9 * DAY].any()
    # ...and a reading at its usual night level is anomalous in the morning: nothing but the
    # time of day says so (the value lies well inside the range of the last days).
    starts = onsets(got.is_anomaly)
    assert len(starts[starts >= rise]) >= 1
    assert rise <= starts[starts >= rise][0] <= rise + 6


def test_without_a_daily_pattern_time_of_day_changes_nothing() -> None:
    # White noise whose readings are spread over many days: the profile explains no variance,
    # so the detector judges the readings exactly as if they had no time of day.
    rng = np.random.default_rng(6)
    values = rng.normal(50, 2, 5 * DAY)
    ts = 1_767_225_600_000 + np.arange(len(values), dtype=np.int64) * FIVE_MINUTES_MS
    got = SurpriseDetector(["x0"]).process(daily_frame(ts, values))
    detector = SurpriseDetector(["x0"])
    same_time = detector.process(daily_frame(np.full(len(values), ts[0]), values))
    np.testing.assert_allclose(got.score, same_time.score, atol=0.5, equal_nan=True)
    assert got.is_anomaly.sum() == same_time.is_anomaly.sum() == 0


def test_a_frozen_sensor_on_a_daily_pattern_is_found() -> None:
    # Repeats are judged on the values as sent, not after the daily pattern is removed (which
    # changes at each half hour and would break the run).
    ts, values = daily(8, seed=7)
    values = np.round(values, 3)
    frozen = 7 * DAY + 10 * 12
    values[frozen : frozen + 60] = values[frozen - 1]
    got = SurpriseDetector(["x0"]).process(daily_frame(ts, values))
    starts = onsets(got.is_anomaly)
    assert len(starts[starts >= frozen]) >= 1
    assert frozen <= starts[starts >= frozen][0] <= frozen + 4


def test_a_snapshot_of_an_older_detector_is_refused_whole() -> None:
    detector = SurpriseDetector(["x0"])
    detector.process(readings(np.arange(10.0)))
    snapshot = detector.snapshot()
    fresh = SurpriseDetector(["x0"])
    without_season = copy.deepcopy(snapshot)
    del without_season["stations"]["s1"]["sensors"]["x0"]["season"]
    with pytest.raises(ValueError, match="lacks"):
        fresh.restore(without_season)
    blocks = copy.deepcopy(snapshot)  # peak blocks, before episodes
    blocks["stations"]["s1"]["peak"] = [0.0, 0.0, 0]
    del blocks["stations"]["s1"]["episode"]
    with pytest.raises(ValueError, match="episode"):
        fresh.restore(blocks)
    assert fresh.snapshot() == {"stations": {}, "alarm": {}}
