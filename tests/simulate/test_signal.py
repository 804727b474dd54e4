"""The fault-free signal: statistics, layout, determinism, sequence numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faultline.config import DEFAULT_SENSORS, SensorSpec, load_settings
from faultline.schema import READING_COLUMNS, RECEIVED_AT, SEQ, STATION_ID, TS, TS_ASSIGNED
from faultline.simulate import (
    DEFAULT_START_MS,
    Simulator,
    normal_frame,
    simulate_frame,
    station_ids,
)

SENSORS = tuple(DEFAULT_SENSORS)


def test_fault_free_means_and_spreads_match_the_configuration() -> None:
    frame, labels = simulate_frame(DEFAULT_SENSORS, 4000, stations=25, seed=7)
    assert labels == []
    for name, spec in DEFAULT_SENSORS.items():
        values = frame[name]
        assert abs(values.mean() - spec.mean) < 0.15 * spec.std, name
        assert abs(values.std() / spec.std - 1) < 0.06, name


def test_seed_000_defaults() -> None:
    means = {name: (spec.mean, spec.std) for name, spec in DEFAULT_SENSORS.items()}
    assert means == {"temperature": (25, 2), "humidity": (60, 3), "noise_level": (50, 3)}


def test_each_sensor_is_a_mean_reverting_walk_not_white_noise() -> None:
    sim = Simulator(DEFAULT_SENSORS, stations=50, seed=3, correlation_s=30.0)
    ts = DEFAULT_START_MS + 1000 * np.arange(2000)
    values = sim.block(ts).values.reshape(2000, 50, 3)
    deviation = values - values.mean(axis=0)
    lag1 = (deviation[1:] * deviation[:-1]).sum() / (deviation**2).sum()
    assert lag1 == pytest.approx(np.exp(-1 / 30), abs=0.01)


def test_normal_frame_has_the_schema_layout() -> None:
    frame = normal_frame(dict(DEFAULT_SENSORS), 1003, seed=0)
    assert list(frame.columns) == [*READING_COLUMNS, *SENSORS]
    assert len(frame) == 1003
    assert frame.index.equals(pd.RangeIndex(1003))
    assert set(frame[STATION_ID]) == set(station_ids(25))
    assert frame[TS].dtype == np.int64 and frame[SEQ].dtype == np.int64
    assert frame[RECEIVED_AT].equals(frame[TS])
    assert frame[TS_ASSIGNED].dtype == bool and not frame[TS_ASSIGNED].any()
    assert frame[list(SENSORS)].notna().all().all()
    assert (frame[list(SENSORS)].dtypes == np.float64).all()
    # Tick by tick: the first 25 rows are the first tick of every station.
    assert frame[STATION_ID].iloc[:25].tolist() == list(station_ids(25))
    assert (frame[TS].iloc[:25] == DEFAULT_START_MS).all()


def test_normal_frame_of_zero_rows_keeps_the_columns() -> None:
    frame = normal_frame(dict(DEFAULT_SENSORS), 0, seed=0)
    assert len(frame) == 0
    assert list(frame.columns) == [*READING_COLUMNS, *SENSORS]


def test_station_ids_are_numbered_from_one() -> None:
    assert station_ids(3) == ("station_001", "station_002", "station_003")
    assert station_ids(1000)[-1] == "station_1000"


def test_same_seed_gives_identical_readings_and_labels() -> None:
    first = simulate_frame(DEFAULT_SENSORS, 1800, stations=10, seed=42, faults_per_station_hour=8)
    second = simulate_frame(DEFAULT_SENSORS, 1800, stations=10, seed=42, faults_per_station_hour=8)
    pd.testing.assert_frame_equal(first[0], second[0])
    assert first[1] == second[1] and len(first[1]) > 10
    other = simulate_frame(DEFAULT_SENSORS, 1800, stations=10, seed=43, faults_per_station_hour=8)
    assert not first[0][list(SENSORS)].equals(other[0][list(SENSORS)])
    assert first[1] != other[1]


def test_grouping_ticks_into_blocks_does_not_change_anything() -> None:
    ts = DEFAULT_START_MS + 1000 * np.arange(1500)

    def run(sizes: list[int]) -> tuple[pd.DataFrame, list[object]]:
        sim = Simulator(DEFAULT_SENSORS, stations=8, seed=5, faults_per_station_hour=20)
        frames, labels = [], []
        begin = 0
        for size in sizes:
            block = sim.block(ts[begin : begin + size])
            frames.append(block.frame())
            labels.extend(block.labels)
            begin += size
        labels.extend(sim.finish())
        return pd.concat(frames, ignore_index=True), labels

    whole = run([1500])
    by_tick = run([1] * 1500)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 1500), 40, replace=False))
    uneven = run(np.diff(np.concatenate([[0], cuts, [1500]])).tolist())
    assert len(whole[1]) > 20
    for other in (by_tick, uneven):
        pd.testing.assert_frame_equal(whole[0], other[0])
        assert whole[1] == other[1]


def test_seq_rises_by_one_per_reading_of_each_station() -> None:
    frame, labels = simulate_frame(
        DEFAULT_SENSORS,
        3000,
        stations=6,
        seed=1,
        faults_per_station_hour=30,
        fault_weights={"dropout": 1.0},
    )
    assert any(label.kind == "dropout" for label in labels)
    for _, rows in frame.groupby(STATION_ID):
        assert (np.diff(rows[SEQ].to_numpy()) == 1).all()
        assert rows[SEQ].iloc[0] == 0
        assert (np.diff(rows[TS].to_numpy()) > 0).all()


def test_an_empty_block_changes_nothing() -> None:
    sim = Simulator(DEFAULT_SENSORS, stations=3, seed=9, faults_per_station_hour=50)
    twin = Simulator(DEFAULT_SENSORS, stations=3, seed=9, faults_per_station_hour=50)
    empty = sim.block([])
    assert len(empty) == 0 and empty.labels == [] and sim.ticks == 0
    ts = DEFAULT_START_MS + 1000 * np.arange(100)
    pd.testing.assert_frame_equal(sim.block(ts).frame(), twin.block(ts).frame())


def test_from_settings_follows_the_simulate_section() -> None:
    settings = load_settings(
        simulate={"stations": 4, "seed": 11, "rate_hz": 2.0, "faults_per_station_hour": 3.0},
        sensors={"pressure": {"mean": 5.0, "std": 0.5, "min": 0.0, "max": 20.0}},
    )
    sim = Simulator.from_settings(settings)
    assert sim.station_ids == station_ids(4)
    assert sim.sensors == ("pressure",)
    assert sim.tick_s == 0.5
    again = Simulator.from_settings(settings).block([DEFAULT_START_MS])
    assert np.array_equal(sim.block([DEFAULT_START_MS]).values, again.values)
    flat_out = load_settings(simulate={"rate_hz": 0.0})
    assert Simulator.from_settings(flat_out).tick_s == 1.0


SPEC = SensorSpec(mean=1.0, std=1.0, min=-10.0, max=10.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stations": 0}, "stations must be at least 1"),
        ({"tick_s": 0.0}, "tick_s must be a positive number"),
        ({"correlation_s": float("nan")}, "correlation_s must be a positive number"),
        ({"malfunction_noise_mean": -1.0}, "malfunction_noise_mean must be a positive number"),
        ({"faults_per_station_hour": -1.0}, "faults_per_station_hour must be a number >= 0"),
        ({"fault_weights": {"meltdown": 1.0}}, "unknown fault kind 'meltdown'"),
        ({"fault_weights": {"spike": -1.0}}, "fault weight for spike must be"),
        ({"fault_weights": {"spike": 0.0}}, "at least one kind a positive weight"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Simulator({"x": SPEC}, **kwargs)


def test_no_sensors_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one sensor"):
        Simulator({})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ticks": -1}, "ticks must be >= 0"), ({"ticks": 5, "interval_ms": 0}, "interval_ms")],
)
def test_simulate_frame_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_frame(DEFAULT_SENSORS, **kwargs)


def test_normal_frame_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        normal_frame(dict(DEFAULT_SENSORS), -1, seed=0)
