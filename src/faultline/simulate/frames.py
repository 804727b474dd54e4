"""Simulated readings as frames, without JSON: for training, evaluation and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from faultline.config import SensorSpec
from faultline.schema import FaultLabel
from faultline.simulate.simulator import Simulator

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, as faultline.clock.ManualClock
_BLOCK_READINGS = 100_000  # bounds the memory of one generated block


def simulate_frame(
    sensors: Mapping[str, SensorSpec],
    ticks: int,
    *,
    stations: int = 25,
    seed: int = 0,
    faults_per_station_hour: float = 0.0,
    fault_weights: Mapping[str, float] | None = None,
    start_ms: int = DEFAULT_START_MS,
    interval_ms: int = 1000,
) -> tuple[pd.DataFrame, list[FaultLabel]]:
    """`ticks` ticks `interval_ms` apart from `start_ms`, and the label of every injected fault."""
    if ticks < 0:
        raise ValueError(f"ticks must be >= 0, got {ticks}")
    if interval_ms < 1:
        raise ValueError(f"interval_ms must be at least 1, got {interval_ms}")
    sim = Simulator(
        sensors,
        stations=stations,
        seed=seed,
        faults_per_station_hour=faults_per_station_hour,
        fault_weights=fault_weights,
        tick_s=interval_ms / 1000,
    )
    times = start_ms + interval_ms * np.arange(ticks, dtype=np.int64)
    per_block = max(1, _BLOCK_READINGS // stations)
    frames: list[pd.DataFrame] = []
    labels: list[FaultLabel] = []
    for begin in range(0, ticks, per_block):
        block = sim.block(times[begin : begin + per_block])
        frames.append(block.frame())
        labels.extend(block.labels)
    labels.extend(sim.finish())
    if not frames:
        frames.append(sim.block(times).frame())
    return pd.concat(frames, ignore_index=True), labels


def normal_frame(
    sensors: dict[str, SensorSpec], n: int, seed: int, stations: int = 25
) -> pd.DataFrame:
    """`n` fault-free readings of `stations` stations (tick by tick), e.g. to train a model."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    frame, _ = simulate_frame(sensors, -(-n // stations), stations=stations, seed=seed)
    return frame.iloc[:n].reset_index(drop=True)
