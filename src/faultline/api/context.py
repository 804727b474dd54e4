"""Everything the API's handlers may touch, handed to `create_app` by the entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from faultline.bus import Bus
from faultline.clock import Clock
from faultline.config import Settings
from faultline.metrics import Metrics
from faultline.models.base import ModelSource
from faultline.store import Store
from faultline.tokens import TokenStore

Probe = Callable[[], str | None]
"""A health check: None when healthy, else a sentence saying what is wrong."""


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
