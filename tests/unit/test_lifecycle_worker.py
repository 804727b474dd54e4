"""The runtime's scheduled drift check: it runs every lifecycle.drift_interval_s, outlives checks
that fail, runs the whole cycle with auto_retrain, and starts from the latest recorded check."""

from __future__ import annotations

import threading
from pathlib import Path

from faultline.clock import ManualClock
from faultline.config import load_settings
from faultline.models.lifecycle import CycleOutcome, RecordedDrift
from faultline.runtime import Runtime
from tests.api.fake_lifecycle import FakeLifecycle
from tests.contract.batches import T0
from tests.unit.test_retention_worker import eventually


class FlakyLifecycle(FakeLifecycle):
    """Its first `failures` drift checks fail as an unreachable registry would; counts calls."""

    def __init__(self, clock: ManualClock, failures: int = 0) -> None:
        super().__init__(clock)
        self.failures = failures
        self.checks = 0
        self.cycles: list[str] = []

    def check_drift(self) -> RecordedDrift:
        self.checks += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("tracking store unreachable")
        return super().check_drift()

    def check_drift_retrain(self, actor: str) -> CycleOutcome:
        self.cycles.append(actor)
        return super().check_drift_retrain(actor)


def runtime_with(tmp_path: Path, lifecycle: FakeLifecycle, **lifecycle_settings: object) -> Runtime:
    settings = load_settings(data_dir=tmp_path, lifecycle=lifecycle_settings)
    runtime = Runtime(settings, clock=ManualClock(T0), stop=threading.Event())
    runtime.lifecycle = lifecycle
    return runtime


def sample(runtime: Runtime, name: str, **labels: str) -> float | None:
    return runtime.metrics.registry.get_sample_value(name, labels)


def test_the_check_runs_on_its_interval_and_outlives_failures(tmp_path: Path) -> None:
    lifecycle = FlakyLifecycle(ManualClock(T0), failures=2)
    runtime = runtime_with(tmp_path, lifecycle, drift_interval_s=0.02)

    runtime.start_lifecycle()

    eventually(lambda: sample(runtime, "faultline_model_drift_detected") == 1)
    assert lifecycle.checks >= 3  # two failures first, then a check that went through
    assert sample(runtime, "faultline_model_drift_check_failures_total") == 2
    assert sample(runtime, "faultline_model_drift_shift", sensor="humidity") == 1.1
    assert sample(runtime, "faultline_model_drift_psi", sensor="temperature") == 0.03
    assert sample(runtime, "faultline_model_anomaly_rate") == 0.004
    assert sample(runtime, "faultline_model_drift_checked_timestamp_seconds") == T0 / 1000
    assert lifecycle.cycles == []  # no auto_retrain: checks only
    assert runtime.supervisor.workers["lifecycle"].restarts == 0
    runtime.stop.set()
    assert runtime.supervisor.join(5) == []


def test_auto_retrain_runs_the_whole_cycle_as_auto(tmp_path: Path) -> None:
    lifecycle = FlakyLifecycle(ManualClock(T0))
    runtime = runtime_with(tmp_path, lifecycle, drift_interval_s=0.02, auto_retrain=True)

    runtime.start_lifecycle()

    eventually(lambda: bool(lifecycle.cycles))
    assert lifecycle.cycles[0] == "auto"
    eventually(lambda: any(c.actor == "auto" for c in lifecycle.history()))
    runtime.stop.set()
    assert runtime.supervisor.join(5) == []


def test_a_recent_recorded_check_sets_the_gauges_and_the_next_waits(tmp_path: Path) -> None:
    lifecycle = FlakyLifecycle(ManualClock(T0))
    lifecycle.check_drift()  # recorded at T0, the runtime's now: the next is an hour away
    runtime = runtime_with(tmp_path, lifecycle, drift_interval_s=3600)

    runtime.start_lifecycle()

    eventually(lambda: sample(runtime, "faultline_model_drift_detected") == 1)
    assert lifecycle.checks == 1
    runtime.stop.set()
    assert runtime.supervisor.join(5) == []


def test_no_schedule_at_interval_zero(tmp_path: Path) -> None:
    runtime = runtime_with(tmp_path, FlakyLifecycle(ManualClock(T0)), drift_interval_s=0)

    runtime.start_lifecycle()

    assert "lifecycle" not in runtime.supervisor.workers
