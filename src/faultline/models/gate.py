"""The gate's results, as LIFECYCLE_API.md fixes them (the lifecycle branch brings the gate)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GateFigures:
    readings: int
    false_alarms: int
    false_alarm_rate: float
    alarms: int
    faults: int
    faults_caught: int
    detection_rate: float


@dataclass(frozen=True, slots=True)
class GateResult:
    challenger_version: str
    champion_version: str | None
    passed: bool
    reason: str
    challenger: GateFigures
    champion: GateFigures | None
    window_start_ms: int
    window_end_ms: int
    gated_at_ms: int
