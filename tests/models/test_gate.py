"""The gate's parts without a registry: its data, its figures and its decision rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faultline.config import load_settings
from faultline.models.gate import (
    GateData,
    GateFigures,
    GateResult,
    Verdicts,
    figures,
    gate_data,
    judge,
    matched_detection,
)
from faultline.store import SqliteStore
from tests.contract.batches import SENSORS, T0, reading_frame, write_batch
from tests.models.conftest import normal_readings

SETTINGS = load_settings(lifecycle={"gate_faults": 30, "gate_max_readings": 1000})


def figs(false_alarms: int, detection: float, matched: float | None = None) -> GateFigures:
    return GateFigures(
        1000, false_alarms, false_alarms / 1000, false_alarms, 30, 10, detection, matched
    )


def test_false_alarms_may_exceed_the_champions_by_the_tolerance_and_the_slack() -> None:
    # 8 x 1.25 + 0.2 % of 1000 readings = 12
    assert judge(SETTINGS, figs(12, 0.5), figs(8, 0.5))[0]
    passed, reason = judge(SETTINGS, figs(13, 0.5), figs(8, 0.5))
    assert not passed
    assert reason == (
        "rejected: it raised 13 false alarms in 1000 recent readings, the champion 8 "
        "(at most 12 allowed)"
    )


def test_detection_is_judged_on_the_matched_rates_less_the_tolerance() -> None:
    # The champion's raw 60 % counts for nothing: at the challenger's false alarms it flags 40 %.
    assert judge(SETTINGS, figs(5, 0.36, 0.36), figs(20, 0.6, 0.40))[0]
    passed, reason = judge(SETTINGS, figs(5, 0.34, 0.34), figs(20, 0.6, 0.40))
    assert not passed
    assert reason.startswith(
        "rejected: at the false-alarm rate both reach it flagged 34.0% of the injected faults' "
        "readings, the champion 40.0% (at least 35.0% needed)"
    )


def test_without_a_champion_or_without_readings() -> None:
    passed, reason = judge(SETTINGS, figs(3, 0.5), None)
    assert passed and reason.startswith("no champion to compare with; on its own: 3 false alarms")
    empty = dataclasses.replace(figs(0, 0.0), readings=199)
    passed, reason = judge(SETTINGS, empty, figs(0, 0.0))
    assert not passed and reason.startswith("too few readings to judge: 199 clean readings")


def test_figures_count_episodes_per_station_and_credit_only_what_the_fault_caused() -> None:
    readings = pd.DataFrame(
        {"station_id": ["a"] * 4 + ["b"] * 3, "ts": [0, 1, 2, 3, 0, 1, 2], "x": 0.0}
    )
    flagged = np.array([1, 1, 0, 1, 1, 0, 0], bool)  # a: two episodes; b: one (not joined to a's)
    data = GateData(readings, (np.zeros((2, 1)), np.zeros((1, 1))), (1, 5), 0, 4)
    # Fault 1 covers readings 1-2 (reading 1 flagged anyway), fault 2 covers reading 5.
    v = Verdicts(
        scores=np.array([0.9, 0.8, 0.1, 0.7, 0.6, 0.2, 0.3]),
        flagged=flagged,
        fault_scores=np.array([0.95, 0.5, 0.85]),
        fault_flagged=np.array([1, 0, 1], bool),
    )
    f = figures(data, v)
    assert (f.readings, f.false_alarms, f.alarms, f.faults) == (7, 4, 3, 2)
    assert (f.faults_caught, f.detection_rate) == (1, pytest.approx(1 / 3))
    # Held to 1 false alarm its threshold is 0.8: fault 1's 0.95 counts now (reading 1 is not
    # flagged any more), fault 2's 0.85 too.
    assert matched_detection(data, v, 1) == pytest.approx(2 / 3)
    assert matched_detection(data, v, 4) == f.detection_rate


def test_a_gate_result_survives_its_json() -> None:
    result = GateResult("2", "1", True, "why", figs(1, 0.5, 0.5), figs(2, 0.6, 0.4), 1, 2, 3)
    assert GateResult.from_json(result.to_json()) == result
    alone = dataclasses.replace(result, champion_version=None, champion=None)
    assert GateResult.from_json(alone.to_json()) == alone


def test_the_injected_faults_are_seeded_and_change_the_readings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "faultline.db")
    ts = T0 + np.arange(600) * 1000
    for k, station in enumerate(("a", "b")):
        values = normal_readings(600, seed=k).to_numpy()
        store.write(write_batch(reading_frame(station, ts, values=values)))
    # 1200 stored, the newest 1000 kept: the last 500 seconds of each station.
    first = gate_data(SETTINGS, store, SENSORS, T0, T0 + 600_000)
    again = gate_data(SETTINGS, store, SENSORS, T0, T0 + 600_000)
    assert len(first.readings) == 1000
    assert (first.readings["station_id"] == "a").sum() == 500
    assert len(first.faults) == 30 and first.fault_at == again.fault_at
    assert all(np.array_equal(x, y) for x, y in zip(first.faults, again.faults, strict=True))
    originals = first.readings[list(SENSORS)].to_numpy()
    changed = [
        not np.array_equal(rows, originals[at : at + len(rows)])
        for at, rows in zip(first.fault_at, first.faults, strict=True)
    ]
    assert sum(changed) >= 25  # a stuck fault may freeze a value that barely moved
    stations = first.readings["station_id"].to_numpy()
    assert all(
        len(set(stations[at : at + len(rows)])) == 1
        for at, rows in zip(first.fault_at, first.faults, strict=True)
    )
    store.close()
