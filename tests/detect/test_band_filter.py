"""Seed 003's band filter: its statistic, warm-up, rings and snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faultline.detect.band_filter import BandFilterDetector
from tests.detect.frames import station_frame


def test_the_band_includes_the_reading_itself_as_the_seed_computed_it() -> None:
    # Window of 10: 0,1,0,1,0,1,0,1,0 then 100. Over those ten the mean is 10.4 and the sample
    # std 31.486, so the band's top is 10.4 + 3 * 31.486 = 104.86 and even 100 lies inside it:
    # a reading in its own window of n is at most (n - 1)/sqrt(n) std from the mean (2.85 here).
    base = [0.0, 1.0] * 4 + [0.0]
    got = BandFilterDetector(["t"], window=10).process(station_frame({"t": [*base, 100.0]}))
    assert np.isnan(got.score[:9]).all()
    assert got.score[9] == 0.0
    assert not got.is_anomaly[9]


def test_a_window_with_two_out_of_band_readings_is_anomalous() -> None:
    # A long flat-ish history, then two large readings close together: with a window of 40 the
    # band (≈ mean ± 3 std) leaves both outside, so the second reading's window counts 2.
    rng = np.random.default_rng(0)
    values = [*rng.normal(0, 1, 60), 25.0, 0.0, 25.0]
    got = BandFilterDetector(["t"], window=40).process(station_frame({"t": values}))
    assert got.score[60] == 1.0 and not got.is_anomaly[60]
    assert got.score[62] == 2.0 and got.is_anomaly[62]
    assert got.sensor_mask[62] == 1


def test_each_sensor_has_its_own_window_and_the_row_takes_the_worst() -> None:
    rng = np.random.default_rng(1)
    a = [*rng.normal(0, 1, 50), 30.0, 0.0, 30.0]
    b = list(rng.normal(0, 1, 53))
    got = BandFilterDetector(["a", "b"], window=30).process(station_frame({"a": a, "b": b}))
    assert got.is_anomaly[52]
    assert got.sensor_mask[52] == 0b01


def test_a_missing_reading_neither_scores_nor_enters_the_window() -> None:
    values = [float(v) for v in range(12)]
    with_gap = [*values[:5], np.nan, *values[5:]]
    plain = BandFilterDetector(["t"], window=5).process(station_frame({"t": values}))
    gapped = BandFilterDetector(["t"], window=5).process(station_frame({"t": with_gap}))
    assert np.isnan(gapped.score[5])
    np.testing.assert_array_equal(np.delete(gapped.score, 5), plain.score)


def test_warm_up_is_one_reading_short_of_a_window() -> None:
    got = BandFilterDetector(["t"], window=6).process(station_frame({"t": [1.0, 2.0] * 5}))
    assert np.isnan(got.score[:5]).all()
    assert np.isfinite(got.score[5:]).all()


def test_score_does_not_learn_and_learn_matches_process() -> None:
    values = {"t": list(np.random.default_rng(2).normal(0, 1, 40))}
    frame = station_frame(values)
    processed = BandFilterDetector(["t"], window=8).process(frame)
    detector = BandFilterDetector(["t"], window=8)
    detector.learn(frame.iloc[:30])
    first = detector.score(frame.iloc[30:31])
    again = detector.score(frame.iloc[30:31])
    np.testing.assert_array_equal(first.score, again.score)
    assert first.score[0] == processed.score[30]


def test_snapshot_restores_the_ring_in_order_even_into_a_shorter_window() -> None:
    values = [float(v) for v in range(30)]
    detector = BandFilterDetector(["t"], window=10)
    detector.learn(station_frame({"t": values}))
    snapshot = json.loads(json.dumps(detector.snapshot()))
    assert snapshot["stations"]["s1"]["t"] == values[-9:]
    shorter = BandFilterDetector(["t"], window=5)
    shorter.restore(snapshot)
    assert shorter.snapshot()["stations"]["s1"]["t"] == values[-4:]
    assert detector.snapshot(["nobody"]) == {"window": 10, "stations": {}}


def test_restoring_an_unknown_sensor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sensors"):
        BandFilterDetector(["t"]).restore({"window": 60, "stations": {"s1": {"x": [1.0]}}})


def test_a_window_too_small_for_a_standard_deviation_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        BandFilterDetector(["t"], window=2)
