"""What the rest of Faultline knows about trained models: their identity, and drift reports.

The registry (MLflow) sits behind `ModelSource`; the engine and the API ask it for the current
champion and never touch MLflow themselves. The engines follow the champion alias through
`ChampionSource` (models/watch.py), so a promotion or rollback reaches a running engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str  # registered model name
    version: str  # registry version, "1", "2", ...
    run_id: str  # MLflow run id: seed 000's `mlflow_id` / `model_version`
    alias: str
    trained_at_ms: int
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SensorDrift:
    ks_statistic: float
    p_value: float
    psi: float  # population stability index over reference deciles
    drifted: bool
    # Wasserstein-1 distance over the reference's standard deviation: how far, in normal
    # spreads, the recent values moved (1.0 = a shift of one standard deviation).
    shift: float = 0.0


@dataclass(frozen=True, slots=True)
class ScoreDrift:
    """The model's anomaly rate on recent readings against the rate it was fitted to flag."""

    anomaly_rate: float
    expected_rate: float  # the forest's contamination
    p_value: float  # one-sided binomial test: more anomalies than the contamination explains
    drifted: bool
    rows: int


@dataclass(frozen=True, slots=True)
class DriftReport:
    drift_detected: bool
    sensors: dict[str, SensorDrift]
    reference_size: int
    recent_size: int
    message: str
    score: ScoreDrift | None = None


class LoadedModel(Protocol):
    """A trained model ready to score: seed 000's StandardScaler + IsolationForest."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def sensors(self) -> tuple[str, ...]: ...

    @property
    def reference(self) -> pd.DataFrame:
        """A sample of the training data (one column per sensor), the baseline for drift."""
        ...

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        """Rows of sensor values (in `sensors` order) → scores; higher = more anomalous."""
        ...

    def is_anomaly(self, features: np.ndarray) -> np.ndarray:
        """The model's own decision (IsolationForest's contamination threshold)."""
        ...


class ModelSource(Protocol):
    """Hands out the model currently promoted to the serving alias."""

    def current(self) -> LoadedModel: ...


class ChampionSource(ModelSource, Protocol):
    """A `ModelSource` that can be followed: which version its alias names now (a cheap look
    that loads nothing), and any registered version by number."""

    def version_of(self, alias: str | None = None) -> str | None: ...

    def load_version(self, version: str) -> LoadedModel: ...
