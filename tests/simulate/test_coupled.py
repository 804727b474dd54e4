"""Stations whose sensors follow their machine's load, and the faults only that relation shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faultline.config import COUPLED_SENSORS, DEFAULT_SENSORS
from faultline.schema import STATION_ID, TS, FaultLabel
from faultline.simulate import FaultKind, Simulator, simulate_frame

SENSORS = tuple(COUPLED_SENSORS)
COUPLING = {name: spec.load_coupling for name, spec in COUPLED_SENSORS.items()}
TICKS = 20_000
STATIONS = 4


def correlation(frame: pd.DataFrame, a: str, b: str) -> float:
    """Mean over stations of the correlation of sensors `a` and `b`."""
    return float(np.mean([g[a].corr(g[b]) for _, g in frame.groupby(STATION_ID)]))


def test_coupled_sensors_keep_their_means_and_spreads_and_move_together() -> None:
    frame, _ = simulate_frame(COUPLED_SENSORS, TICKS, stations=STATIONS, seed=3)
    for name, spec in COUPLED_SENSORS.items():
        # A walk with a 30-tick correlation time: ~650 independent readings per station.
        assert frame[name].mean() == pytest.approx(spec.mean, abs=0.1 * spec.std)
        assert frame[name].std() == pytest.approx(spec.std, rel=0.05)
    for a, b in [("temperature", "humidity"), ("temperature", "noise_level")]:
        assert correlation(frame, a, b) == pytest.approx(COUPLING[a] * COUPLING[b], abs=0.08)


def test_uncoupled_sensors_read_exactly_as_before_coupling_existed() -> None:
    """The load has a random stream of its own: a spec without coupling draws nothing from it,
    and one sensor's coupling leaves the other sensors' readings untouched."""
    plain, _ = simulate_frame(DEFAULT_SENSORS, 500, stations=3, seed=5)
    one = dict(DEFAULT_SENSORS)
    one["humidity"] = one["humidity"].model_copy(update={"load_coupling": 0.9})
    coupled, _ = simulate_frame(one, 500, stations=3, seed=5)
    for name in ("temperature", "noise_level"):
        assert (plain[name] == coupled[name]).all()
    assert not (plain["humidity"] == coupled["humidity"]).all()


def faulty_and_clean(kind: str) -> tuple[pd.DataFrame, list[FaultLabel]]:
    faulty, labels = simulate_frame(
        COUPLED_SENSORS,
        TICKS,
        stations=STATIONS,
        seed=11,
        faults_per_station_hour=3.0,
        fault_weights={kind: 1.0},
    )
    clean, _ = simulate_frame(COUPLED_SENSORS, TICKS, stations=STATIONS, seed=11)
    merged = clean.merge(
        faulty[[STATION_ID, TS, *SENSORS]], on=[STATION_ID, TS], suffixes=("_clean", "")
    )
    assert len(labels) >= 20 and {label.kind for label in labels} == {kind}
    return merged, labels


def during(frame: pd.DataFrame, labels: list[FaultLabel], sensor: str) -> pd.DataFrame:
    rows = np.zeros(len(frame), bool)
    for label in labels:
        if label.sensor == sensor:
            rows |= (
                (frame[STATION_ID] == label.station_id)
                & (frame[TS] >= label.start_ts)
                & (frame[TS] <= label.end_ts)
            ).to_numpy()
    return frame[rows]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # Torn off its machine: the sensor no longer follows the others.
        (FaultKind.DECOUPLE, lambda normal: 0.0),
        # Following the load the wrong way: the relation turns round.
        (FaultKind.REVERSED, lambda normal: -normal),
    ],
)
def test_a_relation_fault_changes_the_relation_and_nothing_a_sensor_shows_alone(
    kind: FaultKind, expected: object
) -> None:
    frame, labels = faulty_and_clean(kind.value)
    assert {label.sensor for label in labels} <= set(SENSORS)
    for sensor in {label.sensor for label in labels}:
        inside = during(frame, labels, sensor)
        assert len(inside) > 2000, "too few faulty readings to judge"
        other = "humidity" if sensor != "humidity" else "temperature"
        normal = COUPLING[sensor] * COUPLING[other]
        # A walk's correlation over a few thousand readings is noisy (about 0.1): the clean
        # twin of the same readings shows the relation the fault took away.
        got = float(np.corrcoef(inside[sensor], inside[other])[0, 1])
        was = float(np.corrcoef(inside[f"{sensor}_clean"], inside[other])[0, 1])
        assert got == pytest.approx(expected(normal), abs=0.2)  # type: ignore[operator]
        assert was == pytest.approx(normal, abs=0.2)
        # The sensor alone is as it always is: its mean and spread.
        spec = COUPLED_SENSORS[sensor]
        assert inside[sensor].mean() == pytest.approx(spec.mean, abs=0.15 * spec.std)
        assert inside[sensor].std() == pytest.approx(spec.std, rel=0.1)
    # Every other sensor, and every reading outside the faults, is untouched.
    for name in SENSORS:
        outside = frame.drop(during(frame, labels, name).index)
        assert (outside[name] == outside[f"{name}_clean"]).all()


def test_grouping_ticks_into_blocks_does_not_change_coupled_readings() -> None:
    def run(block: int) -> tuple[np.ndarray, list[FaultLabel]]:
        sim = Simulator(COUPLED_SENSORS, stations=3, seed=2, faults_per_station_hour=20.0)
        times = 1000 * np.arange(3000, dtype=np.int64)
        values, labels = [], []
        for start in range(0, len(times), block):
            got = sim.block(times[start : start + block])
            values.append(got.values)
            labels += got.labels
        return np.concatenate(values), labels + sim.finish()

    whole, labels = run(3000)
    for block in (1, 7, 500):
        values, got = run(block)
        assert np.array_equal(values, whole) and got == labels
    assert {label.kind for label in labels} & {"decouple", "reversed"}


@pytest.mark.parametrize("kind", ["decouple", "reversed"])
def test_a_relation_fault_without_coupled_sensors_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match=f"fault kind {kind} needs sensors that follow"):
        Simulator(DEFAULT_SENSORS, faults_per_station_hour=1.0, fault_weights={kind: 1.0})
