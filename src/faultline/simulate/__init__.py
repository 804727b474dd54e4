"""Simulated stations with injected, labelled faults (`faultline simulate`)."""

from faultline.simulate.faults import (
    DEFAULT_FAULT_WEIGHTS,
    FAULT_SHAPES,
    MALFUNCTION_NOISE_MEAN,
    RELATION_KINDS,
    STATION_WIDE,
    FaultKind,
    FaultShape,
    fault_kinds,
)
from faultline.simulate.frames import DEFAULT_START_MS, normal_frame, simulate_frame
from faultline.simulate.runner import run_simulator
from faultline.simulate.simulator import DECIMALS, Block, Simulator, station_ids

__all__ = [
    "DECIMALS",
    "DEFAULT_FAULT_WEIGHTS",
    "DEFAULT_START_MS",
    "FAULT_SHAPES",
    "MALFUNCTION_NOISE_MEAN",
    "RELATION_KINDS",
    "STATION_WIDE",
    "Block",
    "FaultKind",
    "FaultShape",
    "Simulator",
    "fault_kinds",
    "normal_frame",
    "run_simulator",
    "simulate_frame",
    "station_ids",
]
