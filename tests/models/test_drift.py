from __future__ import annotations

import numpy as np
import pytest

from faultline.config import DEFAULT_SENSORS
from faultline.models.base import ModelInfo
from faultline.models.drift import (
    check_drift,
    population_stability_index,
    relative_shift,
    score_drift,
)
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.simulate import normal_frame
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
    assert humidity.p_value < 1e-10 and humidity.psi > 0.25 and humidity.ks_statistic > 0.3
    assert humidity.shift == pytest.approx(1.0, abs=0.1)
    assert report.message.startswith("drift detected in humidity (shift 1.")
    assert report.score is None  # no model given
    assert "no drift in temperature, noise_level" in report.message


def test_a_tiny_shift_that_ks_notices_is_not_drift() -> None:
    # With 100k readings KS rejects a 0.05-sigma shift, which no model would suffer from.
    recent = normal_readings(100_000, 4, shift={"temperature": 0.05})
    report = check_drift(normal_readings(100_000, 5), recent, SENSORS)
    assert report.sensors["temperature"].p_value < 0.01
    assert report.sensors["temperature"].psi < 0.25
    assert report.sensors["temperature"].shift < 0.1
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


def test_shift_is_in_reference_spreads_whatever_the_sample_size() -> None:
    reference = np.random.default_rng(9).normal(10.0, 4.0, 5000)
    for n in (300, 30_000):
        recent = np.random.default_rng(n).normal(10.0 + 4.0 * 0.5, 4.0, n)
        assert relative_shift(reference, recent) == pytest.approx(0.5, abs=0.12)
    constant = np.full(300, 3.0)
    assert relative_shift(constant, constant) == 0.0
    assert relative_shift(constant, constant + 1e-6) > 100


def test_score_drift_needs_both_a_large_and_a_real_excess() -> None:
    flagged = np.zeros(5000, bool)
    flagged[:6] = True  # 0.12 %: what a contamination of 0.125 % expects
    calm = score_drift(flagged, 0.00125)
    assert (calm.drifted, calm.rows, calm.anomaly_rate) == (False, 5000, 0.0012)
    assert calm.p_value > 0.3
    flagged[:60] = True  # ten times the contamination
    assert score_drift(flagged, 0.00125).drifted
    few = np.zeros(200, bool)
    few[:2] = True  # 4x the contamination, but 2 readings of 200 are chance (p ~ 0.03)
    assert not score_drift(few, 0.00125).drifted


@pytest.fixture(scope="module")
def simulated_model() -> SklearnModel:
    """Trained as runtime trains the first champion: fault-free simulated readings."""
    frame = normal_frame(DEFAULT_SENSORS, 20_000, seed=0)
    pipeline = train_isolation_forest(
        frame, SENSORS, n_estimators=100, contamination=0.00125, seed=0
    )
    info = ModelInfo("m", "1", "run", "champion", 0, {"contamination": "0.00125"})
    return SklearnModel(pipeline, info, SENSORS, frame.sample(n=5000, random_state=0))


def test_fresh_data_from_the_same_simulator_is_rarely_drift(
    simulated_model: SklearnModel,
) -> None:
    reports = [
        check_drift(
            simulated_model.reference,
            normal_frame(DEFAULT_SENSORS, 5000, seed=100 + k),
            SENSORS,
            model=simulated_model,
        )
        for k in range(20)
    ]
    false_drift = sum(r.drift_detected for r in reports) / len(reports)
    assert false_drift <= 0.05, [r.message for r in reports if r.drift_detected]
    # KS alone, as the check once judged, would call most of them drift: the readings are
    # autocorrelated, so its p-values mean nothing here.
    ks_alone = sum(any(s.p_value < 0.01 for s in r.sensors.values()) for r in reports)
    assert ks_alone >= 10
    assert all(r.score is not None and r.score.rows == 5000 for r in reports)


@pytest.mark.parametrize("sensor", SENSORS)
def test_a_one_sd_shift_in_one_sensor_is_drift(simulated_model: SklearnModel, sensor: str) -> None:
    recent = normal_frame(DEFAULT_SENSORS, 5000, seed=200)
    recent[sensor] += DEFAULT_SENSORS[sensor].std
    report = check_drift(simulated_model.reference, recent, SENSORS, model=simulated_model)
    assert report.drift_detected
    assert [s for s, r in report.sensors.items() if r.drifted] == [sensor]
    assert report.message.startswith(f"drift detected in {sensor} (shift ")


def test_a_model_flagging_far_more_than_its_contamination_is_score_drift(
    simulated_model: SklearnModel,
) -> None:
    recent = normal_frame(DEFAULT_SENSORS, 5000, seed=300)
    # 10 % of the readings far out in every sensor at once: a forest scores a reading beyond
    # the training range in one sensor alone like the most extreme training reading there.
    for name, spec in DEFAULT_SENSORS.items():
        recent.loc[::10, name] += 5 * spec.std
    report = check_drift(simulated_model.reference, recent, SENSORS, model=simulated_model)
    assert report.score is not None and report.score.drifted
    assert report.score.anomaly_rate > 0.05
    assert "score drift: " in report.message
    assert report.drift_detected


def test_score_drift_is_left_out_without_enough_complete_readings(
    simulated_model: SklearnModel,
) -> None:
    recent = normal_frame(DEFAULT_SENSORS, 500, seed=400)
    recent.loc[100:, "humidity"] = np.nan
    report = check_drift(simulated_model.reference, recent, SENSORS, model=simulated_model)
    assert report.score is None
    assert "not enough data for the anomaly rate (100 complete readings)" in report.message
    unknown = SklearnModel(
        simulated_model.pipeline,
        ModelInfo("m", "1", "run", "champion", 0),  # no contamination recorded
        SENSORS,
        simulated_model.reference,
    )
    assert check_drift(unknown.reference, recent, SENSORS, model=unknown).score is None
