"""Everything the API's handlers may touch, handed to `create_app` by the entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from faultline.bus import Bus
from faultline.clock import Clock
from faultline.config import Settings
from faultline.metrics import Metrics
from faultline.models.base import ModelSource
from faultline.store import Store
from faultline.tokens import TokenStore

if TYPE_CHECKING:
    from faultline.models.base import ModelInfo
    from faultline.models.gate import GateResult
    from faultline.models.lifecycle import (
        ChampionChange,
        CycleOutcome,
        RecordedDrift,
        VersionView,
    )

Probe = Callable[[], str | None]
"""A health check: None when healthy, else a sentence saying what is wrong."""


class ModelLifecycle(Protocol):
    """What the API asks of faultline.models.lifecycle.Lifecycle: every call is synchronous and
    may take minutes (training, gating), so handlers run them off the event loop."""

    def check_drift(self) -> RecordedDrift: ...

    def latest_drift(self) -> RecordedDrift | None: ...

    def retrain(
        self, start_ms: int | None = None, end_ms: int | None = None, stations: str = "*"
    ) -> ModelInfo: ...

    def gate(self, version: str) -> GateResult: ...

    def promote(
        self, version: str, *, actor: str, reason: str, force: bool = False
    ) -> ChampionChange: ...

    def rollback(self, *, actor: str, reason: str) -> ChampionChange: ...

    def versions(self) -> list[VersionView]: ...

    def history(self) -> list[ChampionChange]: ...

    def check_drift_retrain(self, actor: str) -> CycleOutcome: ...


@dataclass
class AppContext:
    settings: Settings
    store: Store
    bus: Bus
    metrics: Metrics
    clock: Clock
    models: ModelSource | None  # None: no trained model, so no /api/predict or drift check
    tokens: TokenStore  # who may call what: faultline.api.security
    probes: dict[str, Probe] = field(default_factory=dict)
    # Retraining, the gate, promotion and scheduled drift (api/model_routes.py); None: this
    # process has no model registry, so the model routes say so.
    lifecycle: ModelLifecycle | None = None
