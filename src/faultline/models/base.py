"""What the rest of Faultline knows about trained models: their identity, and drift reports.

The registry (MLflow) sits behind `ModelSource`; the engine and the API ask it for the current
champion and never touch MLflow themselves, so a hot swap later only changes what `current()`
returns.
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


@dataclass(frozen=True, slots=True)
class DriftReport:
    drift_detected: bool
    sensors: dict[str, SensorDrift]
    reference_size: int
    recent_size: int
    message: str


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
