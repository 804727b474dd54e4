"""How the model follows the plant: drift checks, retraining, the gate, promotion and rollback.

Everything is recorded in the MLflow registry, so that any process (the API, the CLI, the
scheduled drift worker) sees what another did:

- a gate's result on the challenger's run: metrics `gate_challenger_*` and `gate_champion_*` at
  the gate's time (a history when a version is gated again), tags `gate_passed`, `gate_reason`,
  and `gate_result` (the whole GateResult as JSON: the latest, from which `versions()` rebuilds
  it);
- a drift check on the champion's run: metrics `drift_detected`, `drift_shift_<sensor>`,
  `drift_psi_<sensor>` and `drift_anomaly_rate` at the check's time; the last check (the
  RecordedDrift as JSON, whichever version it was checked against) in the registered model's tag
  `faultline.last_drift`;
- promotions and rollbacks in the registered model's tag `faultline.champion_history`: a JSON
  list of ChampionChange, newest first, at most HISTORY_LIMIT of them.

Operations that change the registry take the registry's file lock, so they run one at a time
across processes; `check_drift_retrain` holds it from the check to the promotion.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from faultline.clock import Clock
from faultline.config import Settings
from faultline.models.base import DriftReport, ModelInfo, ScoreDrift, SensorDrift
from faultline.models.drift import check_drift
from faultline.models.gate import GateResult, run_gate
from faultline.models.registry import COMPILED_TAG, MlflowModelRegistry, ModelNotFoundError
from faultline.models.training import train_on_store
from faultline.store.base import RecentReadings, Store

HISTORY_TAG = "faultline.champion_history"
DRIFT_TAG = "faultline.last_drift"
GATE_TAG = "gate_result"
# Promotions and rollbacks kept: years of weekly retraining; rollback reaches back this far.
HISTORY_LIMIT = 200
REASON_CHARS = 500  # a reason is a sentence, not a log


class LifecycleRefused(Exception):
    """The operation is not allowed now; str(exc) says why (API: 409)."""


@dataclass(frozen=True, slots=True)
class ChampionChange:
    """A recorded promotion or rollback."""

    operation: str  # "promote" | "rollback"
    from_version: str | None
    to_version: str
    at_ms: int
    actor: str  # token name / "cli" / "auto"
    reason: str


@dataclass(frozen=True, slots=True)
class VersionView:
    info: ModelInfo
    aliases: tuple[str, ...]
    compiled: str  # the run's compiled_form tag ("logged" or why not)
    gate: GateResult | None  # the latest gate of this version, if any


@dataclass(frozen=True, slots=True)
class RecordedDrift:
    report: DriftReport  # score drift included
    checked_at_ms: int
    model_version: str  # registry version of the champion it was checked against

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RecordedDrift:
        data: dict[str, Any] = json.loads(text)
        report = data.pop("report")
        score = report.pop("score")
        sensors = {k: SensorDrift(**v) for k, v in report.pop("sensors").items()}
        return cls(
            report=DriftReport(
                sensors=sensors, score=None if score is None else ScoreDrift(**score), **report
            ),
            **data,
        )


@dataclass(frozen=True, slots=True)
class CycleOutcome:
    msg: str  # seed 000's message: what was checked and done, or why not
    drift: RecordedDrift
    challenger: ModelInfo | None
    gate: GateResult | None
    promoted: bool
    model_version: str  # MLflow run id serving after the cycle (seed 000's field)


class Lifecycle:
    """Drift, retraining, gating, promotion and rollback over one registry and one store."""

    def __init__(
        self, settings: Settings, store: Store, registry: MlflowModelRegistry, clock: Clock
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._clock = clock

    def check_drift(self) -> RecordedDrift:
        """The champion against the newest lifecycle.drift_sample readings; recorded."""
        with self._registry._exclusive():
            return self._check_drift()

    def latest_drift(self) -> RecordedDrift | None:
        """The last recorded drift check, by whichever process made it."""
        text = self._registry.model_tag(DRIFT_TAG)
        return None if text is None else RecordedDrift.from_json(text)

    def retrain(
        self, start_ms: int | None = None, end_ms: int | None = None, stations: str = "*"
    ) -> ModelInfo:
        """A challenger trained on [start_ms, end_ms); by default on the training window that
        ends where the gate's window begins. LifecycleRefused when there is too little to
        train on."""
        with self._registry._exclusive():
            return self._retrain(start_ms, end_ms, stations)

    def gate(self, version: str) -> GateResult:
        """Judge `version` against the champion on recent readings; recorded on its run.
        ModelNotFoundError when no such version is registered."""
        with self._registry._exclusive():
            return self._gate(version)

    def promote(
        self, version: str, *, actor: str, reason: str, force: bool = False
    ) -> ChampionChange:
        """Make `version` the champion. Refused unless its latest gate passed against the
        version serving now (or `force`), and for the version already serving."""
        with self._registry._exclusive():
            return self._promote(version, actor=actor, reason=reason, force=force)

    def rollback(self, *, actor: str, reason: str) -> ChampionChange:
        """Bring back the champion the current one replaced (repeatedly: further back)."""
        with self._registry._exclusive():
            current = self._registry.version_of()
            if current is None:
                raise LifecycleRefused("there is no champion to roll back")
            target = _previous_champion(self.history(), current)
            if target is None:
                raise LifecycleRefused(
                    f"version {current} serves and no earlier champion is recorded to roll back to"
                )
            self._registry.point(self._settings.model.alias, target)
            return self._record_change("rollback", current, target, actor, reason)

    def versions(self) -> list[VersionView]:
        """Every registered version, newest first, with its aliases and latest gate."""
        return [
            VersionView(
                info=info,
                aliases=aliases,
                compiled=tags.get(COMPILED_TAG, "not recorded"),
                gate=GateResult.from_json(tags[GATE_TAG]) if GATE_TAG in tags else None,
            )
            for info, aliases, tags in self._registry.listing()
        ]

    def history(self) -> list[ChampionChange]:
        """Promotions and rollbacks, newest first."""
        text = self._registry.model_tag(HISTORY_TAG)
        return [] if text is None else [ChampionChange(**c) for c in json.loads(text)]

    def check_drift_retrain(self, actor: str) -> CycleOutcome:
        """Check drift; on drift retrain, gate, and promote what passes. Says what it did."""
        with self._registry._exclusive():
            drift = self._check_drift()
            serving = drift.model_version
            report = drift.report
            if not report.drift_detected:
                checked = "No drift detected" if report.sensors else "Drift could not be judged"
                return self._outcome(
                    f"{checked} against version {serving}: {report.message}. Version {serving} "
                    "keeps serving; nothing was retrained.",
                    drift,
                )
            found = f"Drift detected against version {serving}: {report.message}."
            try:
                challenger = self._retrain(None, None, "*")
            except LifecycleRefused as exc:
                return self._outcome(
                    f"{found} Retraining was not possible ({exc}); version {serving} keeps "
                    "serving.",
                    drift,
                )
            trained = (
                f"Version {challenger.version} was trained on the readings from "
                f"{challenger.params.get('train_from')} to {challenger.params.get('train_to')}"
            )
            gate = self._gate(challenger.version)
            if not gate.passed:
                return self._outcome(
                    f"{found} {trained} but did not pass the gate ({gate.reason}); it stays a "
                    f"challenger and version {serving} keeps serving.",
                    drift,
                    challenger,
                    gate,
                )
            self._promote(
                challenger.version,
                actor=actor,
                reason=f"drift against version {serving}; the gate: {gate.reason}",
                force=False,
            )
            return self._outcome(
                f"{found} {trained}, passed the gate ({gate.reason}) and now serves in place of "
                f"version {serving}.",
                drift,
                challenger,
                gate,
                promoted=True,
            )

    def _check_drift(self) -> RecordedDrift:
        try:
            model = self._registry.current()
        except ModelNotFoundError as exc:
            raise LifecycleRefused(f"there is no champion to check drift against ({exc})") from exc
        recent = self._store.query(
            RecentReadings(limit=self._settings.lifecycle.drift_sample, sensors=model.sensors)
        )
        report = check_drift(model.reference, recent, model.sensors, model=model)
        drift = RecordedDrift(report, self._clock.now_ms(), model.info.version)
        metrics = {"drift_detected": float(report.drift_detected)}
        for sensor, result in report.sensors.items():
            metrics[f"drift_shift_{sensor}"] = result.shift
            metrics[f"drift_psi_{sensor}"] = result.psi
        if report.score is not None:
            metrics["drift_anomaly_rate"] = report.score.anomaly_rate
        self._registry.record_on_version(
            model.info.version, at_ms=drift.checked_at_ms, metrics=metrics
        )
        self._registry.set_model_tag(DRIFT_TAG, drift.to_json())
        return drift

    def _retrain(self, start_ms: int | None, end_ms: int | None, stations: str) -> ModelInfo:
        t = self._settings.lifecycle
        now = self._clock.now_ms()
        gate_start = now - round(t.gate_window_s * 1000)
        start = gate_start - round(t.train_window_s * 1000) if start_ms is None else start_ms
        end = gate_start if end_ms is None else end_ms
        try:
            return train_on_store(self._settings, self._store, self._registry, start, end, stations)
        except ValueError as exc:
            raise LifecycleRefused(str(exc)) from exc

    def _gate(self, version: str) -> GateResult:
        challenger = self._registry.load_version(version)
        champion = self._registry.current() if self._registry.has_champion() else None
        result = run_gate(self._settings, self._store, challenger, champion, self._clock.now_ms())
        metrics = {
            f"gate_{who}_{k}": float(v)
            for who, figures in (("challenger", result.challenger), ("champion", result.champion))
            if figures is not None
            for k, v in asdict(figures).items()
            if v is not None
        }
        self._registry.record_on_version(
            version,
            at_ms=result.gated_at_ms,
            metrics=metrics,
            tags={
                "gate_passed": str(result.passed).lower(),
                "gate_reason": result.reason,
                GATE_TAG: result.to_json(),
            },
        )
        return result

    def _promote(self, version: str, *, actor: str, reason: str, force: bool) -> ChampionChange:
        current = self._registry.version_of()
        if version == current:
            raise LifecycleRefused(f"version {version} already serves as the champion")
        tags = self._registry.run_tags(version)  # ModelNotFoundError for an unknown version
        gate = GateResult.from_json(tags[GATE_TAG]) if GATE_TAG in tags else None
        if not force:
            if gate is None:
                raise LifecycleRefused(
                    f"version {version} has not been through the gate; gate it first, or force"
                )
            if not gate.passed:
                raise LifecycleRefused(
                    f"version {version} did not pass its latest gate ({gate.reason}); "
                    "gate it again, or force"
                )
            if gate.champion_version != current:
                raise LifecycleRefused(
                    f"version {version} was gated against version {gate.champion_version}, but "
                    f"version {current} serves now; gate it again, or force"
                )
        self._registry.point(self._settings.model.alias, version)
        return self._record_change("promote", current, version, actor, reason)

    def _record_change(
        self, operation: str, from_version: str | None, to_version: str, actor: str, reason: str
    ) -> ChampionChange:
        change = ChampionChange(
            operation, from_version, to_version, self._clock.now_ms(), actor, reason[:REASON_CHARS]
        )
        kept = [change, *self.history()][:HISTORY_LIMIT]
        self._registry.set_model_tag(
            HISTORY_TAG, json.dumps([asdict(c) for c in kept], separators=(",", ":"))
        )
        return change

    def _outcome(
        self,
        msg: str,
        drift: RecordedDrift,
        challenger: ModelInfo | None = None,
        gate: GateResult | None = None,
        *,
        promoted: bool = False,
    ) -> CycleOutcome:
        serving = self._registry.version_of()
        run_id = "" if serving is None else self._registry.version_info(serving).run_id
        return CycleOutcome(msg, drift, challenger, gate, promoted, run_id)


def _previous_champion(history: list[ChampionChange], current: str) -> str | None:
    """The version the current champion replaced, replaying the recorded changes as a stack:
    a promotion pushes, a rollback pops. A move of the alias outside the lifecycle (the first
    model of an empty plant, an operator's hand) counts as a promotion."""
    stack: list[str] = []
    for change in reversed(history):  # oldest first
        if change.operation == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != change.to_version:
                stack.append(change.to_version)
        else:
            if change.from_version is not None and (not stack or stack[-1] != change.from_version):
                stack.append(change.from_version)
            stack.append(change.to_version)
    if not stack or stack[-1] != current:
        stack.append(current)
    return stack[-2] if len(stack) > 1 else None
