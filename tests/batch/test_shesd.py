"""Seasonal Hybrid ESD on series with known injected anomalies."""

from __future__ import annotations

import numpy as np
import pytest

from faultline.batch.shesd import (
    MAD_TO_SIGMA,
    ShesdParams,
    esd_critical_values,
    generalized_esd,
    robust_sigma,
    seasonal_hybrid_esd,
)

DAY = 1440
PARAMS = ShesdParams(period=60)


def seasonal_day(seed: int, n: int = DAY, period: int = 60, sigma: float = 0.5) -> np.ndarray:
    """A day of 1-minute means: a level, a strong cycle of `period` minutes, gaussian noise."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, sigma, n)
    return 25 + 4 * np.sin(2 * np.pi * t / period) + 1.5 * np.cos(4 * np.pi * t / period) + noise


def test_exactly_one_anomaly_is_reported() -> None:
    x = seasonal_day(1)
    clean = seasonal_day(1, sigma=0.0)
    x[700] += 4.0  # 8 sigma, but inside the cycle's own range (21 to 29.5)
    assert x.min() < x[700] < x.max()

    result = seasonal_hybrid_esd(x, PARAMS)

    assert result.positions.tolist() == [700]
    assert result.scores[0] > 6
    assert abs(result.expected[700] - clean[700]) < 0.5  # the cycle's value there, noise aside


def test_several_anomalies_of_both_signs_and_side_by_side_are_reported() -> None:
    x = seasonal_day(2)
    injected = {90: 5.0, 400: -4.5, 401: 4.5, 902: 6.0, 1300: -5.0}
    for position, jump in injected.items():
        x[position] += jump

    result = seasonal_hybrid_esd(x, PARAMS)

    assert result.positions.tolist() == sorted(injected)
    assert (result.scores > 5).all()


def test_anomalies_beyond_the_maximum_fraction_are_not_all_reported() -> None:
    x = seasonal_day(3, n=240)
    x[[20, 60, 100, 140, 180, 220]] += 8.0  # six anomalies; 2 % of 240 allows four

    result = seasonal_hybrid_esd(x, PARAMS)

    assert len(result.positions) == 4


def test_clean_seasonal_days_rarely_report_anything() -> None:
    """alpha bounds the chance that a clean day reports any anomaly; 40 days at 0.05 expect
    two, and more than eight would happen by chance less than once in 3000 runs."""
    flagged = [len(seasonal_hybrid_esd(seasonal_day(seed), PARAMS).positions) for seed in range(40)]

    assert sum(n > 0 for n in flagged) <= 8
    assert max(flagged) <= 2


def test_a_strong_cycle_alone_is_not_anomalous() -> None:
    """Without the seasonal step the cycle's peaks would stand far out of a median/MAD band."""
    t = np.arange(DAY)
    x = 25 + 10 * (np.sin(2 * np.pi * t / 60) > 0.95) + np.random.default_rng(4).normal(0, 0.3, DAY)

    pulses = set(np.flatnonzero(np.sin(2 * np.pi * t / 60) > 0.95).tolist())

    assert not pulses & set(seasonal_hybrid_esd(x, PARAMS).positions.tolist())
    alone = generalized_esd(x - np.median(x), 28, 0.05)[0]  # ESD without the seasonal step
    assert len(alone) == 28 and set(alone.tolist()) <= pulses


def test_another_period() -> None:
    x = seasonal_day(5, n=24 * 14, period=24)
    x[200] -= 5.0

    assert seasonal_hybrid_esd(x, ShesdParams(period=24)).positions.tolist() == [200]


def test_a_constant_series_has_no_anomalies_and_one_spike_in_it_is_one() -> None:
    flat = np.full(300, 7.0)
    assert seasonal_hybrid_esd(flat, PARAMS).positions.tolist() == []

    flat[123] = 9.0  # over half the deviations are zero: the MAD is 0, the mean deviation not

    assert seasonal_hybrid_esd(flat, PARAMS).positions.tolist() == [123]


def test_critical_values_are_rosners() -> None:
    # NIST/SEMATECH e-Handbook 1.3.5.17.3: n = 54, alpha = 0.05, up to 10 outliers.
    assert esd_critical_values(54, 10, 0.05).round(3).tolist() == [
        3.159,
        3.151,
        3.144,
        3.136,
        3.128,
        3.120,
        3.112,
        3.103,
        3.094,
        3.085,
    ]


def test_the_mad_is_scaled_to_a_standard_deviation() -> None:
    noise = np.random.default_rng(6).normal(0, 2.0, 200_000)

    assert robust_sigma(noise - np.median(noise)) == pytest.approx(2.0, rel=0.01)
    assert MAD_TO_SIGMA == 1.4826


def test_esd_needs_two_degrees_of_freedom() -> None:
    assert generalized_esd(np.array([1.0, 2.0]), 5, 0.05)[0].tolist() == []
    positions, _ = generalized_esd(np.array([0.0, 1.0, 50.0]), 5, 0.05)
    assert positions.tolist() == [2]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros(119), "at least two periods \\(120 observations\\), got 119"),
        (np.r_[np.zeros(150), np.nan], "finite values"),
    ],
)
def test_unusable_series_are_refused(values: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seasonal_hybrid_esd(values, PARAMS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"period": 1}, "period must be at least 2"),
        ({"alpha": 0.0}, "alpha must be between 0 and 1"),
        ({"max_anomalies": 0.5}, "max_anomalies must be in"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShesdParams(**kwargs)  # type: ignore[arg-type]
