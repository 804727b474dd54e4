from __future__ import annotations

import numpy as np
import pytest

from faultline.models.drift import check_drift, population_stability_index
from tests.models.conftest import SENSORS, normal_readings


def test_same_distribution_is_not_drift() -> None:
    report = check_drift(normal_readings(2000, 1), normal_readings(1000, 2), SENSORS)
    assert not report.drift_detected
    assert set(report.sensors) == set(SENSORS)
    assert not any(r.drifted for r in report.sensors.values())
    assert (report.reference_size, report.recent_size) == (2000, 1000)
    assert report.message == "no drift in temperature, humidity, noise_level"


def test_a_shifted_sensor_is_drift_and_named() -> None:
    recent = normal_readings(1000, 3, shift={"humidity": 1.0})
    report = check_drift(normal_readings(2000, 1), recent, SENSORS)
    assert report.drift_detected
    assert [s for s, r in report.sensors.items() if r.drifted] == ["humidity"]
    humidity = report.sensors["humidity"]
    assert humidity.p_value < 1e-10 and humidity.psi > 0.2 and humidity.ks_statistic > 0.3
    assert report.message.startswith("drift detected in humidity (KS p=")
    assert "no drift in temperature, noise_level" in report.message


def test_a_tiny_shift_that_ks_notices_is_not_drift() -> None:
    # With 100k readings KS rejects a 0.05-sigma shift, which no model would suffer from.
    recent = normal_readings(100_000, 4, shift={"temperature": 0.05})
    report = check_drift(normal_readings(100_000, 5), recent, SENSORS)
    assert report.sensors["temperature"].p_value < 0.01
    assert report.sensors["temperature"].psi < 0.2
    assert not report.drift_detected


def test_too_few_recent_readings_is_not_enough_data() -> None:
    recent = normal_readings(199, 6, shift={"humidity": 5.0})
    report = check_drift(normal_readings(2000, 1), recent, SENSORS)
    assert not report.drift_detected
    assert report.sensors == {}
    assert report.message == (
        "not enough data: 199 recent readings, at least 200 are needed to check drift"
    )


def test_a_sensor_with_too_few_finite_values_is_not_judged() -> None:
    recent = normal_readings(500, 7, shift={"noise_level": 3.0})
    recent.loc[50:, "noise_level"] = np.nan
    report = check_drift(normal_readings(2000, 1), recent.drop(columns="humidity"), SENSORS)
    assert set(report.sensors) == {"temperature"}
    assert not report.drift_detected
    assert "not enough data for humidity (0 readings), noise_level (50 readings)" in report.message


def test_reference_must_carry_every_sensor() -> None:
    reference = normal_readings(100, 1)
    with pytest.raises(ValueError, match="lacks sensors \\['humidity'\\]"):
        check_drift(reference.drop(columns="humidity"), normal_readings(300, 2), SENSORS)
    reference["humidity"] = np.nan
    with pytest.raises(ValueError, match="no finite values for 'humidity'"):
        check_drift(reference, normal_readings(300, 2), SENSORS)


def test_psi_is_zero_for_the_same_sample_and_grows_with_the_shift() -> None:
    reference = np.random.default_rng(8).normal(size=5000)
    assert population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-12)
    psis = [population_stability_index(reference, reference + d) for d in (0.1, 0.5, 1.0)]
    assert psis == sorted(psis)
    assert psis[0] < 0.1 < 0.2 < psis[2]
    constant = np.full(100, 3.0)
    assert population_stability_index(constant, constant) == pytest.approx(0.0, abs=1e-12)
