"""Replay: prequential scoring, interleaving and chunking change nothing, and the [0, 1] map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faultline.detect.band_filter import BandFilterDetector
from faultline.evaluate.replay import (
    Series,
    readings_frame,
    replay,
    replay_after_training,
    unit_interval,
)
from faultline.schema import SEQ, STATION_ID, TS


def series(name: str, n: int, seed: int, sensors: tuple[str, ...] = ("a",)) -> Series:
    rng = np.random.default_rng(seed)
    values = pd.DataFrame({s: rng.normal(0, 1, n) for s in sensors})
    if n > 20:  # two spikes close together: anomalous for the band filter
        values.iloc[n // 2] += 9.0
        values.iloc[n // 2 + 3] += 9.0
    return Series(name, 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 60_000, values)


def detector(sensors: tuple[str, ...] = ("a",), window: int = 40) -> BandFilterDetector:
    return BandFilterDetector(sensors, window=window)


def test_one_series_replays_exactly_as_process_on_its_frame() -> None:
    s = series("x", 200, 0)
    expected = detector().process(readings_frame([s], ("a",)))
    (got,) = replay(detector(), [s])
    np.testing.assert_array_equal(got.score, expected.score)
    np.testing.assert_array_equal(got.is_anomaly, expected.is_anomaly)
    assert got.is_anomaly.any()


def test_interleaving_and_chunking_change_no_score() -> None:
    many = [series(f"s{i}", n, i) for i, n in enumerate([150, 90, 300])]
    alone = [replay(detector(), [s])[0] for s in many]
    together = replay(detector(), many, chunk_rows=37)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.sensor_mask, b.sensor_mask)


def test_a_score_depends_only_on_the_past() -> None:
    s = series("x", 120, 1)
    changed = s.values.copy()
    changed.iloc[80:] = 1e6
    (before,) = replay(detector(), [s])
    (after,) = replay(detector(), [Series("x", s.ts_ms, changed)])
    np.testing.assert_array_equal(before.score[:80], after.score[:80])
    assert not np.array_equal(before.score[80:], after.score[80:])


def test_the_frame_interleaves_series_by_position_as_stations() -> None:
    frame = readings_frame([series("p", 3, 0), series("q", 2, 1)], ("a", "b"))
    assert frame[STATION_ID].tolist() == ["p", "q", "p", "q", "p"]
    assert frame[SEQ].tolist() == [0, 0, 1, 1, 2]
    assert frame[TS].tolist()[::2] == [1_700_000_000_000 + k * 60_000 for k in range(3)]
    assert frame["b"].isna().all()  # a sensor a series lacks is absent, not zero


def test_multivariate_series_keep_their_sensor_attribution() -> None:
    s = series("m", 200, 2, sensors=("a", "b"))
    s.values.iloc[150, 1] += 40.0
    s.values.iloc[153, 1] += 40.0
    (got,) = replay(detector(("a", "b")), [s])
    assert got.sensor_mask[153] & 0b10


def test_training_rows_warm_the_detector_and_are_not_returned() -> None:
    s = series("x", 200, 3)
    (whole,) = replay(detector(), [s])
    (rest,) = replay_after_training(detector(), [s], train_rows=50)
    np.testing.assert_array_equal(rest.score, whole.score[50:])
    with pytest.raises(ValueError, match="train_rows"):
        replay_after_training(detector(), [s], train_rows=-1)


def test_bad_series_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        replay(detector(), [series("x", 10, 0), series("x", 10, 1)])
    with pytest.raises(ValueError, match="not detector sensors"):
        replay(detector(), [series("x", 10, 0, sensors=("zz",))])
    with pytest.raises(ValueError, match="times for"):
        Series("x", np.arange(3), pd.DataFrame({"a": [1.0, 2.0]}))


def test_unit_interval_is_monotone_and_maps_no_verdict_to_zero() -> None:
    raw = np.array([np.nan, -3.0, 0.0, 1.0, 3.0, 1e6, np.inf])
    got = unit_interval(raw)
    assert got.tolist()[:4] == [0.0, 0.0, 0.0, 0.5]
    assert got[4] == 0.75
    assert 0.999 < got[5] < 1.0
    assert got[6] == 1.0
    assert (np.diff(got[2:]) > 0).all()
