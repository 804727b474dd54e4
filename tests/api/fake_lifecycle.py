"""A Lifecycle stand-in for the API's own mechanics (jobs, access, error mapping): the same
methods as faultline.models.lifecycle.Lifecycle, over a list of versions in memory, with a
retraining that waits until the test lets it finish."""

from __future__ import annotations

import threading
from dataclasses import replace

from faultline.clock import Clock
from faultline.models.base import DriftReport, ModelInfo, ScoreDrift, SensorDrift
from faultline.models.gate import GateFigures, GateResult
from faultline.models.lifecycle import (
    ChampionChange,
    CycleOutcome,
    LifecycleRefused,
    RecordedDrift,
    VersionView,
)

NAME = "faultline-isolation-forest"
FIGURES = GateFigures(
    readings=1000,
    false_alarms=2,
    false_alarm_rate=0.002,
    alarms=3,
    faults=20,
    faults_caught=18,
    detection_rate=0.8,
)


class FakeLifecycle:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.views = [VersionView(self._info("1"), ("champion",), "logged", None)]
        self.changes: list[ChampionChange] = []
        self.drift: RecordedDrift | None = None
        self.release = threading.Event()  # a retraining finishes once it is set
        self.release.set()
        self.retrain_error: Exception | None = None
        self.gate_passes = True
        self.retrained: list[tuple[int | None, int | None, str]] = []

    def _info(self, version: str) -> ModelInfo:
        return ModelInfo(NAME, version, f"{int(version):032x}", "", self.clock.now_ms())

    def _champion(self) -> str:
        return next(v.info.version for v in self.views if "champion" in v.aliases)

    def check_drift(self) -> RecordedDrift:
        sensors = {
            "temperature": SensorDrift(0.1, 0.2, 0.03, False, shift=0.1),
            "humidity": SensorDrift(0.4, 1e-9, 0.6, True, shift=1.1),
        }
        report = DriftReport(
            True,
            sensors,
            5000,
            4000,
            "drift detected in humidity (shift 1.10 sd, PSI=0.60)",
            score=ScoreDrift(0.004, 0.00125, 0.001, False, 4000),
        )
        self.drift = RecordedDrift(report, self.clock.now_ms(), self._champion())
        return self.drift

    def latest_drift(self) -> RecordedDrift | None:
        return self.drift

    def retrain(
        self, start_ms: int | None = None, end_ms: int | None = None, stations: str = "*"
    ) -> ModelInfo:
        self.release.wait()
        self.retrained.append((start_ms, end_ms, stations))
        if self.retrain_error is not None:
            raise self.retrain_error
        info = self._info(str(len(self.views) + 1))
        self.views = [
            replace(v, aliases=tuple(a for a in v.aliases if a != "challenger")) for v in self.views
        ]
        self.views.insert(0, VersionView(info, ("challenger",), "logged", None))
        return info

    def gate(self, version: str) -> GateResult:
        passed = self.gate_passes
        reason = "it catches as many faults with fewer false alarms" if passed else "worse"
        result = GateResult(
            version, self._champion(), passed, reason, FIGURES, FIGURES, 0, 1000, 2000
        )
        self.views = [
            replace(v, gate=result) if v.info.version == version else v for v in self.views
        ]
        return result

    def _move(self, operation: str, to: str, actor: str, reason: str) -> ChampionChange:
        was = self._champion()
        self.views = [
            replace(
                v,
                aliases=("champion",)
                if v.info.version == to
                else tuple(a for a in v.aliases if a != "champion"),
            )
            for v in self.views
        ]
        change = ChampionChange(operation, was, to, self.clock.now_ms(), actor, reason)
        self.changes.insert(0, change)
        return change

    def promote(
        self, version: str, *, actor: str, reason: str, force: bool = False
    ) -> ChampionChange:
        view = next(v for v in self.views if v.info.version == version)
        if not force and (view.gate is None or not view.gate.passed):
            raise LifecycleRefused(f"version {version} has not passed the gate")
        return self._move("promote", version, actor, reason)

    def rollback(self, *, actor: str, reason: str) -> ChampionChange:
        # One step back only: enough for the API's tests (the real one replays a stack).
        if not self.changes or self.changes[0].operation == "rollback":
            raise LifecycleRefused("no earlier champion to roll back to")
        previous = self.changes[0].from_version
        assert previous is not None
        return self._move("rollback", previous, actor, reason)

    def versions(self) -> list[VersionView]:
        return list(self.views)

    def history(self) -> list[ChampionChange]:
        return list(self.changes)

    def check_drift_retrain(self, actor: str) -> CycleOutcome:
        drift = self.check_drift()
        challenger = self.retrain()
        gate = self.gate(challenger.version)
        self.promote(challenger.version, actor=actor, reason="drift")
        return CycleOutcome(
            "Model drift detected: retrained, gated, promoted.",
            drift,
            challenger,
            gate,
            True,
            challenger.run_id,
        )
