"""Injected faults: each kind changes the signal inside its label and nowhere else."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from faultline.config import COUPLED_SENSORS, DEFAULT_SENSORS, SensorSpec
from faultline.schema import STATION_ID, TS, FaultLabel
from faultline.simulate import (
    DEFAULT_START_MS,
    FAULT_SHAPES,
    MALFUNCTION_NOISE_MEAN,
    RELATION_KINDS,
    STATION_WIDE,
    FaultKind,
    Simulator,
    fault_kinds,
    simulate_frame,
)

SENSORS = tuple(DEFAULT_SENSORS)
STD = {name: spec.std for name, spec in DEFAULT_SENSORS.items()}
MEAN = {name: spec.mean for name, spec in DEFAULT_SENSORS.items()}
TICKS = 3600
STATIONS = 10
RESOLUTION = 1.5e-3  # values are rounded to 3 decimals


def sensors_for(kind: str) -> dict[str, SensorSpec]:
    """The default sensors, coupled to their station's load for the kinds that need it."""
    return COUPLED_SENSORS if FaultKind(kind) in RELATION_KINDS else DEFAULT_SENSORS


def run(kind: str, seed: int = 21) -> tuple[pd.DataFrame, list[FaultLabel]]:
    """A faulty run of one kind, row-aligned with its fault-free twin (same seed).

    Columns: the clean sensor values suffixed `_clean`, the faulty ones unsuffixed (NaN where the
    faulty run sent nothing).
    """
    faulty, labels = simulate_frame(
        sensors_for(kind),
        TICKS,
        stations=STATIONS,
        seed=seed,
        faults_per_station_hour=6.0,
        fault_weights={kind: 1.0},
    )
    clean, _ = simulate_frame(sensors_for(kind), TICKS, stations=STATIONS, seed=seed)
    merged = clean.merge(
        faulty[[STATION_ID, TS, *SENSORS]],
        on=[STATION_ID, TS],
        how="left",
        suffixes=("_clean", ""),
        validate="one_to_one",
    )
    assert len(labels) >= 10, "too few faults to test"
    assert {label.kind for label in labels} == {kind}
    return merged, labels


LAST_TS = DEFAULT_START_MS + 1000 * (TICKS - 1)


def ended(labels: list[FaultLabel]) -> list[FaultLabel]:
    """The labels of faults that ran their course (not cut short by the end of the run)."""
    return [label for label in labels if label.end_ts < LAST_TS]


def inside(frame: pd.DataFrame, label: FaultLabel) -> pd.DataFrame:
    rows = (
        (frame[STATION_ID] == label.station_id)
        & (frame[TS] >= label.start_ts)
        & (frame[TS] <= label.end_ts)
    )
    return frame[rows]


@pytest.mark.parametrize("kind", [k.value for k in fault_kinds(coupled=True)])
def test_a_fault_changes_nothing_outside_its_label(kind: str) -> None:
    frame, labels = run(kind)
    for name in SENSORS:
        covered = np.zeros(len(frame), bool)
        for label in labels:
            if label.sensor in (name, STATION_WIDE):
                covered |= frame.index.isin(inside(frame, label).index)
        outside = frame[~covered]
        assert outside[name].notna().all()
        assert (outside[name] == outside[f"{name}_clean"]).all()


def test_spike_is_one_reading_at_least_six_stds_off() -> None:
    frame, labels = run("spike")
    for label in ended(labels):
        rows = inside(frame, label)
        assert label.start_ts == label.end_ts and len(rows) == 1
        value = rows[label.sensor].iloc[0]
        assert abs(value - MEAN[label.sensor]) >= 6 * STD[label.sensor]


def test_level_shift_is_a_constant_offset_of_at_least_four_stds() -> None:
    frame, labels = run("level_shift")
    for label in ended(labels):
        rows = inside(frame, label)
        offset = rows[label.sensor] - rows[f"{label.sensor}_clean"]
        assert len(rows) >= FAULT_SHAPES[FaultKind.LEVEL_SHIFT].min_s
        assert offset.max() - offset.min() <= 2 * RESOLUTION
        assert abs(offset.iloc[0]) >= 4 * STD[label.sensor] - RESOLUTION


def test_drift_ramps_up_to_at_least_six_stds() -> None:
    frame, labels = run("drift")
    for label in ended(labels):
        rows = inside(frame, label)
        offset = (rows[label.sensor] - rows[f"{label.sensor}_clean"]).abs().to_numpy()
        assert offset[0] < 0.1 * STD[label.sensor]
        assert offset[-1] >= 6 * STD[label.sensor] - RESOLUTION
        assert (np.diff(offset) > -2 * RESOLUTION).all()
        steps = np.arange(1, len(offset) + 1) / len(offset)
        assert np.allclose(offset, offset[-1] * steps, atol=2 * RESOLUTION)


def test_stuck_value_does_not_move() -> None:
    frame, labels = run("stuck")
    for label in ended(labels):
        rows = inside(frame, label)
        assert rows[label.sensor].nunique() == 1
        assert rows[label.sensor].iloc[0] == rows[f"{label.sensor}_clean"].iloc[0]
        assert rows[f"{label.sensor}_clean"].nunique() > 1


def test_variance_multiplies_the_spread_by_at_least_four() -> None:
    frame, labels = run("variance")
    ratios = []
    for label in ended(labels):
        rows = inside(frame, label)
        extra = rows[label.sensor] - rows[f"{label.sensor}_clean"]
        assert abs(extra.mean()) < 2 * STD[label.sensor]  # same level, wider spread
        ratios.append((extra / STD[label.sensor]).to_numpy())
    pooled = np.concatenate(ratios)
    # Extra noise of sqrt(factor**2 - 1) stds on top of the normal one gives factor stds in all.
    assert np.sqrt(pooled.var() + 1) >= 4 - 0.2


def test_malfunction_adds_exponential_noise_of_mean_33() -> None:
    frame, labels = run("malfunction")
    shifts = []
    for label in ended(labels):
        rows = inside(frame, label)
        shift = (rows[label.sensor] - MEAN[label.sensor]).to_numpy()
        assert (shift >= -RESOLUTION).all()  # a steady signal plus positive noise
        if label.sensor != "humidity":  # 60 + noise often meets humidity's 100 % ceiling
            shifts.append(shift)
    pooled = np.concatenate(shifts)
    assert pooled.mean() == pytest.approx(MALFUNCTION_NOISE_MEAN, abs=2.5)
    assert pooled.std() == pytest.approx(MALFUNCTION_NOISE_MEAN, rel=0.15)  # exponential


def test_dropout_silences_the_whole_station() -> None:
    frame, labels = run("dropout")
    for label in ended(labels):
        rows = inside(frame, label)
        assert label.sensor == STATION_WIDE
        assert len(rows) == (label.end_ts - label.start_ts) // 1000 + 1  # the ticks it missed
        assert rows[list(SENSORS)].isna().all().all()


def test_fault_durations_fit_one_hertz() -> None:
    _, labels = simulate_frame(
        DEFAULT_SENSORS, 4 * TICKS, stations=STATIONS, seed=8, faults_per_station_hour=6.0
    )
    lengths: dict[str, list[float]] = defaultdict(list)
    for label in labels:
        lengths[label.kind].append((label.end_ts - label.start_ts) / 1000 + 1)
    assert set(lengths) == {k.value for k in fault_kinds(coupled=False)}
    for kind, seconds in lengths.items():
        shape = FAULT_SHAPES[FaultKind(kind)]
        low, high = (1, 1) if kind == "spike" else (shape.min_s, shape.max_s + 1)
        assert low <= min(seconds) and max(seconds) <= high, kind


def test_labels_never_overlap_on_a_station() -> None:
    _, labels = simulate_frame(
        DEFAULT_SENSORS, 2 * TICKS, stations=STATIONS, seed=4, faults_per_station_hour=40.0
    )
    by_station: dict[str, list[FaultLabel]] = defaultdict(list)
    for label in labels:
        assert label.start_ts <= label.end_ts
        by_station[label.station_id].append(label)
    assert len(by_station) == STATIONS
    for station_labels in by_station.values():
        ordered = sorted(station_labels, key=lambda label: label.start_ts)
        for before, after in itertools.pairwise(ordered):
            assert before.end_ts < after.start_ts


def test_fault_rate_follows_faults_per_station_hour() -> None:
    _, labels = simulate_frame(
        DEFAULT_SENSORS,
        4 * TICKS,
        stations=25,
        seed=2,
        faults_per_station_hour=2.0,
        fault_weights={"spike": 1.0},  # one tick each, so busy stations barely matter
    )
    assert len(labels) == pytest.approx(2.0 * 4 * 25, rel=0.25)


def test_finish_labels_the_faults_still_in_progress() -> None:
    kwargs = {"stations": STATIONS, "seed": 13, "faults_per_station_hour": 10.0}
    _, full = simulate_frame(DEFAULT_SENSORS, TICKS, **kwargs)
    cut = next(
        (label.start_ts - DEFAULT_START_MS) // 1000 + 5
        for label in full
        if label.end_ts - label.start_ts > 10_000
    )
    sim = Simulator(DEFAULT_SENSORS, **kwargs)
    block = sim.block(DEFAULT_START_MS + 1000 * np.arange(cut))
    last_ts = DEFAULT_START_MS + 1000 * (cut - 1)
    finished = sim.finish()
    assert block.labels == [label for label in full if label.end_ts <= last_ts]
    expected = sorted(
        (
            FaultLabel(label.station_id, label.sensor, label.kind, label.start_ts, last_ts)
            for label in full
            if label.start_ts <= last_ts < label.end_ts
        ),
        key=lambda label: label.station_id,
    )
    assert finished == expected and finished
    assert sim.finish() == []
