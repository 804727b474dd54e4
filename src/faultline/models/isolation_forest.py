"""Seed 000's model: StandardScaler + IsolationForest over the configured sensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from faultline.models.base import ModelInfo
from faultline.models.compiled import CompiledForest

SCALER_STEP = "scaler"
FOREST_STEP = "forest"


def training_matrix(frame: pd.DataFrame, sensors: Sequence[str]) -> np.ndarray:
    """The sensor columns as a float matrix; refuses missing columns and non-finite values."""
    missing = [s for s in sensors if s not in frame.columns]
    if missing:
        raise ValueError(f"training data lacks sensor columns {missing}")
    x = frame[list(sensors)].to_numpy(np.float64, na_value=np.nan)
    bad = int((~np.isfinite(x)).any(axis=1).sum())
    if bad:
        raise ValueError(f"training data has {bad} rows with missing or non-finite values")
    return x


def train_isolation_forest(
    frame: pd.DataFrame,
    sensors: Sequence[str],
    *,
    n_estimators: int,
    contamination: float,
    seed: int,
) -> Pipeline:
    """Fit the scaler and forest on `frame`'s sensor columns (in `sensors` order)."""
    x = training_matrix(frame, sensors)
    if len(x) < 2:
        raise ValueError(f"training data needs at least 2 rows, got {len(x)}")
    pipeline = Pipeline(
        [
            (SCALER_STEP, StandardScaler()),
            (
                FOREST_STEP,
                IsolationForest(
                    n_estimators=n_estimators,
                    contamination=contamination,
                    random_state=seed,
                    n_jobs=1,
                ),
            ),
        ]
    )
    # Fitted on a bare array, so scoring arrays later raises no feature-name warnings.
    return pipeline.fit(x)


class SklearnModel:
    """A fitted pipeline with its registry identity; implements `LoadedModel`.

    With a `compiled` form (checked against the pipeline when it was registered) scores come
    from it, bit-identical and without scikit-learn's fixed cost per call.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        info: ModelInfo,
        sensors: Sequence[str],
        reference: pd.DataFrame,
        compiled: CompiledForest | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._compiled = compiled
        self._info = info
        self._sensors = tuple(sensors)
        forest = pipeline.named_steps[FOREST_STEP]
        if forest.n_features_in_ != len(self._sensors):
            raise ValueError(
                f"model was fitted on {forest.n_features_in_} features, "
                f"but {len(self._sensors)} sensors were named"
            )
        self._reference = pd.DataFrame(
            training_matrix(reference, self._sensors), columns=list(self._sensors)
        )
        # predict() flags a row when score_samples < offset_; with anomaly_score = -score_samples
        # that is anomaly_score > -offset_, exactly (a difference of doubles is 0 only when equal).
        self._threshold = -float(forest.offset_)
        if compiled is not None and compiled.n_features != len(self._sensors):
            raise ValueError(
                f"compiled form has {compiled.n_features} features, "
                f"but {len(self._sensors)} sensors were named"
            )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def sensors(self) -> tuple[str, ...]:
        return self._sensors

    @property
    def reference(self) -> pd.DataFrame:
        return self._reference

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    @property
    def scorer(self) -> str:
        """What computes the scores: "compiled" or "scikit-learn"."""
        return "scikit-learn" if self._compiled is None else "compiled"

    @property
    def anomaly_threshold(self) -> float:
        """`is_anomaly(x)` is exactly `anomaly_score(x) > anomaly_threshold`."""
        return self._threshold

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        x = self._check(features)
        if len(x) == 0:
            return np.empty(0)
        if self._compiled is not None:
            return self._compiled.anomaly_score(x)
        return self.sklearn_score(x)

    def sklearn_score(self, features: np.ndarray) -> np.ndarray:
        """The pipeline's own score, whatever scores in service (the compiled form's check)."""
        return np.asarray(-self._pipeline.score_samples(self._check(features)), np.float64)

    def is_anomaly(self, features: np.ndarray) -> np.ndarray:
        return self.anomaly_score(features) > self._threshold

    def _check(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self._sensors):
            raise ValueError(
                f"expected rows of {len(self._sensors)} values {self._sensors}, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("features must be finite numbers")
        return x
