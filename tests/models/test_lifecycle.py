"""The gate, promotion, rollback and the drift cycle, over real MLflow registries and SQLite stores.

Each store holds three stations of readings, one a second for 30 minutes. At the clock's "now"
(the end of the readings) and with these settings, retraining fits on the first 20 minutes and
the gate judges on the last 10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from faultline.cli import main
from faultline.clock import ManualClock
from faultline.config import Settings, load_settings
from faultline.models.isolation_forest import train_isolation_forest
from faultline.models.lifecycle import Lifecycle, LifecycleRefused
from faultline.models.registry import MlflowModelRegistry, ModelNotFoundError
from faultline.store import SqliteStore
from tests.contract.batches import SENSORS, T0, reading_frame, write_batch
from tests.models.conftest import normal_readings

N = 1800  # readings per station
NOW = T0 + N * 1000
TRAINED_TO = T0 + 1200 * 1000  # where retraining's default window ends and the gate's begins


def settings(data_dir: Path, name: str = "faultline-isolation-forest") -> Settings:
    return load_settings(
        data_dir=data_dir,
        model={
            "name": name,
            "n_estimators": 25,
            "train_samples": 1000,
            "seed": 3,
            "contamination": 0.01,
        },
        lifecycle={
            "gate_window_s": 600,
            "train_window_s": 1200,
            "gate_faults": 40,
            "gate_max_readings": 5000,
            "drift_sample": 1000,
        },
    )


def fill(path: Path, early: dict[str, float], late: dict[str, float]) -> SqliteStore:
    """Normal readings, shifted by `early` (sigmas per sensor) in the first 20 minutes and by
    `late` in the last 10."""
    store = SqliteStore(path)
    ts = T0 + np.arange(N) * 1000
    for k, station in enumerate(("line_a-1", "line_a-2", "line_b-1")):
        first = normal_readings(1200, seed=10 + k, shift=early)
        last = normal_readings(N - 1200, seed=20 + k, shift=late)
        values = np.vstack([first.to_numpy(), last.to_numpy()])
        store.write(write_batch(reading_frame(station, ts, values=values)))
    return store


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> SqliteStore:
    return fill(tmp_path_factory.mktemp("fresh") / "faultline.db", {}, {})


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> SqliteStore:
    """Humidity one standard deviation up, all along."""
    shift = {"humidity": 1.0}
    return fill(tmp_path_factory.mktemp("drifted") / "faultline.db", shift, shift)


@pytest.fixture(scope="module")
def odd_history(tmp_path_factory: pytest.TempPathFactory) -> SqliteStore:
    """Every sensor 3 sd up while the training window lasted, back to normal since."""
    shift = dict.fromkeys(SENSORS, 3.0)
    return fill(tmp_path_factory.mktemp("odd") / "faultline.db", shift, {})


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def s(mlflow_dir: Path, request: pytest.FixtureRequest) -> Settings:
    """A registered model of each test's own, in one MLflow store for the module: creating an
    MLflow database costs seconds."""
    return settings(mlflow_dir, request.node.name)


def registry(s: Settings) -> MlflowModelRegistry:
    return MlflowModelRegistry(
        s.mlflow_uri, s.data_dir / "mlartifacts", s.model.name, s.model.alias
    )


def lifecycle(store: SqliteStore, s: Settings, now_ms: int = NOW) -> Lifecycle:
    """A registry whose champion (version 1) was trained on normal readings."""
    reg = registry(s)
    if not reg.has_champion():
        normal = normal_readings(2000, seed=1)
        pipeline = train_isolation_forest(
            normal, SENSORS, n_estimators=25, contamination=0.01, seed=0
        )
        reg.register(pipeline, SENSORS, normal, {"contamination": "0.01"})
    return Lifecycle(s, store, reg, ManualClock(now_ms))


def test_a_challenger_retrained_on_drifted_readings_passes_the_gate(
    drifted: SqliteStore, s: Settings
) -> None:
    lc = lifecycle(drifted, s)
    drift = lc.check_drift()
    assert drift.report.drift_detected and drift.model_version == "1"
    assert [s for s, r in drift.report.sensors.items() if r.drifted] == ["humidity"]
    info = lc.retrain()
    assert (info.version, info.alias) == ("2", "challenger")
    assert info.params["train_to"] == "2026-01-01T00:20:00Z"
    gate = lc.gate(info.version)
    assert gate.passed, gate.reason
    assert (gate.challenger_version, gate.champion_version) == ("2", "1")
    assert (gate.window_start_ms, gate.window_end_ms, gate.gated_at_ms) == (TRAINED_TO, NOW, NOW)
    ours, theirs = gate.challenger, gate.champion
    assert theirs is not None
    assert ours.readings == theirs.readings == 3 * 600
    assert ours.faults == theirs.faults == 40
    # The old champion sees the drifted humidity as abnormal: many more false alarms.
    assert theirs.false_alarms > 2 * ours.false_alarms
    assert theirs.alarms > ours.alarms
    # Its higher raw detection is its trigger-happiness: held to the challenger's false-alarm
    # rate it catches no more than the challenger (less the tolerance).
    assert theirs.detection_rate > ours.detection_rate
    assert ours.matched_detection_rate == ours.detection_rate
    assert theirs.matched_detection_rate is not None
    assert theirs.matched_detection_rate < theirs.detection_rate
    assert ours.detection_rate >= theirs.matched_detection_rate - 0.05
    # Recorded on the challenger's run, and rebuilt from there.
    run = MlflowClient(s.mlflow_uri).get_run(info.run_id)
    assert run.data.tags["gate_passed"] == "true"
    assert run.data.tags["gate_reason"] == gate.reason
    assert run.data.metrics["gate_champion_false_alarms"] == theirs.false_alarms
    assert run.data.metrics["gate_challenger_faults_caught"] == ours.faults_caught
    views = lc.versions()
    assert [(v.info.version, v.aliases) for v in views] == [
        ("2", ("challenger",)),
        ("1", ("champion",)),
    ]
    assert views[0].gate == gate and views[1].gate is None
    assert views[0].compiled == "logged"
    # Passed against the version serving now: promotion is allowed.
    change = lc.promote("2", actor="test", reason="retrained after the humidity drift")
    assert (change.operation, change.from_version, change.to_version) == ("promote", "1", "2")
    assert registry(s).version_of() == "2"
    assert lc.history() == [change]
    with pytest.raises(LifecycleRefused, match="version 2 already serves as the champion"):
        lc.promote("2", actor="test", reason="again", force=True)


def test_a_bad_challenger_is_rejected_kept_unpromoted_and_the_champion_stays(
    odd_history: SqliteStore, s: Settings
) -> None:
    lc = lifecycle(odd_history, s)
    info = lc.retrain()  # on the odd 20 minutes
    gate = lc.gate(info.version)
    assert not gate.passed
    assert gate.reason.startswith("rejected: ")
    assert f"it raised {gate.challenger.false_alarms} false alarms in 1800" in gate.reason
    assert gate.champion is not None
    assert gate.challenger.false_alarms > 10 * max(gate.champion.false_alarms, 1)
    with pytest.raises(LifecycleRefused, match="version 2 did not pass its latest gate"):
        lc.promote(info.version, actor="test", reason="try")
    assert registry(s).version_of() == "1"
    assert registry(s).version_of("challenger") == "2"
    assert lc.history() == []
    assert MlflowClient(s.mlflow_uri).get_run(info.run_id).data.tags["gate_passed"] == "false"
    # An operator may still insist; the promotion is recorded as forced by its reason.
    change = lc.promote(info.version, actor="operator", reason="forced for a test", force=True)
    assert registry(s).version_of() == "2"
    assert lc.history() == [change]


def test_promotion_refuses_ungated_and_stale_gates_and_unknown_versions(
    fresh: SqliteStore, s: Settings
) -> None:
    lc = lifecycle(fresh, s)
    second = lc.retrain()
    with pytest.raises(LifecycleRefused, match="version 2 has not been through the gate"):
        lc.promote(second.version, actor="test", reason="try")
    with pytest.raises(LifecycleRefused, match="version 1 already serves"):
        lc.promote("1", actor="test", reason="try")
    with pytest.raises(ModelNotFoundError, match="has no version '9'"):
        lc.promote("9", actor="test", reason="try")
    with pytest.raises(ModelNotFoundError):
        lc.gate("9")
    assert lc.gate(second.version).champion_version == "1"
    third = lc.retrain()
    lc.promote(third.version, actor="test", reason="forced", force=True)
    # Version 2 was judged against version 1, which no longer serves.
    with pytest.raises(LifecycleRefused, match="gated against version 1, but version 3 serves"):
        lc.promote(second.version, actor="test", reason="try")


def test_rollback_restores_the_previous_champion_and_both_are_in_the_history(
    fresh: SqliteStore, s: Settings
) -> None:
    lc = lifecycle(fresh, s)
    with pytest.raises(LifecycleRefused, match="version 1 serves and no earlier champion"):
        lc.rollback(actor="test", reason="nothing to go back to")
    for _ in range(2):
        lc.promote(lc.retrain().version, actor="test", reason="forced", force=True)
    assert registry(s).version_of() == "3"
    back = lc.rollback(actor="operator", reason="version 3 chatters")
    assert (back.operation, back.from_version, back.to_version) == ("rollback", "3", "2")
    assert registry(s).version_of() == "2"
    assert registry(s).current().info.version == "2"
    further = lc.rollback(actor="operator", reason="and 2 too")
    assert (further.from_version, further.to_version) == ("2", "1")
    with pytest.raises(LifecycleRefused, match="no earlier champion"):
        lc.rollback(actor="operator", reason="past the first")
    history = Lifecycle(s, fresh, registry(s), ManualClock(NOW)).history()
    assert [(c.operation, c.from_version, c.to_version) for c in history] == [
        ("rollback", "2", "1"),
        ("rollback", "3", "2"),
        ("promote", "2", "3"),
        ("promote", "1", "2"),
    ]
    assert history[1].actor == "operator" and history[1].reason == "version 3 chatters"


def test_the_latest_drift_check_is_seen_from_another_process(
    drifted: SqliteStore, s: Settings
) -> None:
    lc = lifecycle(drifted, s)
    assert lc.latest_drift() is None
    checked = lc.check_drift()
    other = Lifecycle(s, drifted, registry(s), ManualClock(0))
    assert other.latest_drift() == checked
    assert checked.checked_at_ms == NOW
    assert checked.report.score is not None and checked.report.score.rows == 1000
    run_id = registry(s).version_info("1").run_id
    metrics = MlflowClient(s.mlflow_uri).get_run(run_id).data.metrics
    assert metrics["drift_detected"] == 1.0
    assert metrics["drift_shift_humidity"] == pytest.approx(
        checked.report.sensors["humidity"].shift
    )


def test_a_cycle_without_drift_changes_nothing(fresh: SqliteStore, s: Settings) -> None:
    lc = lifecycle(fresh, s)
    outcome = lc.check_drift_retrain("auto")
    assert not outcome.drift.report.drift_detected
    assert outcome.msg.startswith("No drift detected against version 1: no drift in ")
    assert outcome.msg.endswith("Version 1 keeps serving; nothing was retrained.")
    assert (outcome.challenger, outcome.gate, outcome.promoted) == (None, None, False)
    assert outcome.model_version == registry(s).version_info("1").run_id
    assert [v.info.version for v in lc.versions()] == ["1"]
    assert lc.history() == []


def test_a_cycle_on_drift_retrains_gates_and_promotes(drifted: SqliteStore, s: Settings) -> None:
    lc = lifecycle(drifted, s)
    outcome = lc.check_drift_retrain("auto")
    assert outcome.promoted
    assert outcome.challenger is not None and outcome.gate is not None and outcome.gate.passed
    assert outcome.msg.startswith("Drift detected against version 1: drift detected in humidity")
    assert "Version 2 was trained on the readings from 2026-01-01T00:00:00Z to " in outcome.msg
    assert outcome.msg.endswith("and now serves in place of version 1.")
    assert registry(s).version_of() == "2"
    assert outcome.model_version == outcome.challenger.run_id
    [change] = lc.history()
    assert (change.actor, change.from_version, change.to_version) == ("auto", "1", "2")
    assert change.reason.startswith("drift against version 1; the gate: ")


def test_a_cycle_whose_challenger_fails_the_gate_keeps_the_champion(
    odd_history: SqliteStore, s: Settings
) -> None:
    # The newest readings are normal; a champion trained on a warmer plant sees them drift,
    # and the challenger retrained on the odd 20 minutes is worse still.
    reg = registry(s)
    shifted = normal_readings(2000, seed=1, shift={"temperature": 2.0})
    pipeline = train_isolation_forest(shifted, SENSORS, n_estimators=25, contamination=0.01, seed=0)
    reg.register(pipeline, SENSORS, shifted, {"contamination": "0.01"})
    outcome = Lifecycle(s, odd_history, reg, ManualClock(NOW)).check_drift_retrain("auto")
    assert outcome.drift.report.drift_detected
    assert not outcome.promoted and outcome.gate is not None and not outcome.gate.passed
    assert "but did not pass the gate (rejected: " in outcome.msg
    assert outcome.msg.endswith("it stays a challenger and version 1 keeps serving.")
    assert reg.version_of() == "1" and reg.version_of("challenger") == "2"
    assert outcome.model_version == reg.version_info("1").run_id


def test_a_gate_without_enough_recent_readings_does_not_pass(
    fresh: SqliteStore, s: Settings
) -> None:
    lc = lifecycle(fresh, s)
    info = lc.retrain()
    later = Lifecycle(s, fresh, registry(s), ManualClock(NOW + 86_400_000))
    gate = later.gate(info.version)
    assert not gate.passed
    assert gate.reason == (
        "too few readings to judge: 0 clean readings in the gate's window, at least 200 needed"
    )
    assert gate.challenger.faults == 0
    with pytest.raises(LifecycleRefused, match="did not pass its latest gate \\(too few"):
        later.promote(info.version, actor="test", reason="try")


def test_the_models_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", str(tmp_path)]
    assert main(["train", *base, "--n-estimators", "15"]) == 0
    capsys.readouterr()
    assert main(["models", "list", *base]) == 0
    listed = capsys.readouterr().out
    assert "version    1  @champion" in listed and "not gated" in listed
    assert main(["models", "history", *base]) == 0
    assert capsys.readouterr().out == "no promotion or rollback recorded\n"
    assert main(["models", "promote", "1", *base]) == 1
    assert "faultline: version 1 already serves as the champion" in capsys.readouterr().err
    assert main(["models", "rollback", *base, "--reason", "test"]) == 1
    assert "no earlier champion is recorded" in capsys.readouterr().err
    assert main(["models", "promote", "7", *base]) == 1
    assert "has no version '7'" in capsys.readouterr().err
    # An empty store: nothing to judge, which each command says.
    assert main(["models", "gate", "1", *base]) == 0
    gated = capsys.readouterr().out
    assert "version 1 gate " in gated and "did not pass: too few readings to judge" in gated
    assert "challenger        1         0" in gated
    assert main(["models", "drift", *base]) == 0
    assert "version 1: no drift: not enough data: 0 recent readings" in capsys.readouterr().out
    assert main(["models", "cycle", *base]) == 0
    assert capsys.readouterr().out.startswith("Drift could not be judged against version 1")


def test_a_cycle_that_cannot_retrain_says_why(drifted: SqliteStore, s: Settings) -> None:
    # At 10.5 minutes the training window, which ends where the gate's 10 minutes begin, holds
    # the first 30 seconds of readings; the drift check still sees the newest readings.
    lc = lifecycle(drifted, s, now_ms=T0 + 630_000)
    outcome = lc.check_drift_retrain("auto")
    assert outcome.drift.report.drift_detected
    assert (outcome.challenger, outcome.gate, outcome.promoted) == (None, None, False)
    assert "Retraining was not possible (too little to train on: 90 clean readings" in outcome.msg
    assert outcome.msg.endswith("version 1 keeps serving.")
    assert [v.info.version for v in lc.versions()] == ["1"]
