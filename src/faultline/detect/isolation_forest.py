"""Seed 000's detector: a trained model scores each reading on its own, with no station state."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from faultline.detect.base import Detector, Scores
from faultline.models.base import LoadedModel

log = logging.getLogger(__name__)

# A sensor whose reference sample does not vary gets this spread, so attribution never divides
# by zero; any departure from its constant value then dominates, which is the right blame.
_MIN_SPREAD = 1e-9


@runtime_checkable
class ThresholdedModel(Protocol):
    """A model whose decision is a threshold on its score, so one pass over the forest suffices.

    Scoring 1000 trees costs far more than the rest of the pipeline; asking `anomaly_score` and
    then `is_anomaly` would walk every tree twice.
    """

    @property
    def anomaly_threshold(self) -> float: ...


class IsolationForestDetector(Detector):
    """Scores = the model's anomaly score; the blamed sensor deviates most from the reference.

    With `verdicts=False` it contributes its score only and flags nothing: its contamination
    threshold, fitted to flag a share of every plant's normal readings, would spend the
    false-alarm budget (docs/decisions/0020). The model's own decision (`is_anomaly`, seed
    000's `is_outlier`) is unchanged either way.
    """

    name: ClassVar[str] = "isolation_forest"

    def __init__(
        self, sensors: Sequence[str], model: LoadedModel, *, verdicts: bool = True
    ) -> None:
        super().__init__(sensors)
        self.verdicts = verdicts
        unknown = [s for s in model.sensors if s not in self.sensors]
        if unknown:
            raise ValueError(f"model {model.info.run_id} needs unconfigured sensors {unknown}")
        self._model = model
        self._features = list(model.sensors)
        self._bits = np.array([1 << self.sensors.index(s) for s in model.sensors], np.int64)
        reference = model.reference[self._features].to_numpy(np.float64)
        self._center = reference.mean(axis=0)
        self._spread = np.maximum(reference.std(axis=0), _MIN_SPREAD)
        self._threshold = model.anomaly_threshold if isinstance(model, ThresholdedModel) else None

    @property
    def version(self) -> str:
        return self._model.info.run_id

    def score(self, frame: pd.DataFrame) -> Scores:
        n = len(frame)
        out = Scores.empty(n)
        if n == 0:
            return out
        x = frame.reindex(columns=self._features).to_numpy(np.float64, na_value=np.nan)
        complete = np.flatnonzero(np.isfinite(x).all(axis=1))
        if len(complete) == 0:
            return out
        rows = x[complete]
        score = self._model.anomaly_score(rows)
        if not self.verdicts:
            out.score[complete] = score
            return out
        if self._threshold is None:
            flagged = np.asarray(self._model.is_anomaly(rows), bool)
        else:
            flagged = score > self._threshold
        # The model gives no per-feature attribution; the sensor furthest from the training data
        # in standard deviations is the one an engineer should look at first.
        blamed = np.abs((rows - self._center) / self._spread).argmax(axis=1)
        out.score[complete] = score
        out.is_anomaly[complete] = flagged
        out.sensor_mask[complete] = np.where(flagged, self._bits[blamed], 0)
        return out

    def process(self, frame: pd.DataFrame) -> Scores:
        """One pass over the whole batch: with no state, rounds per station would only multiply
        the (costly) walks through the forest."""
        return self.score(frame)

    def learn(self, frame: pd.DataFrame) -> None:
        """Nothing to learn online: the model changes only by retraining."""

    def forget(self, stations: Sequence[str]) -> None:
        """Nothing to forget: the model holds no state per station."""

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        return {"model_version": self.version}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Check the snapshot came from this detector; there is no station state to load.

        A snapshot from another model version is normal after retraining and loses nothing, so
        it is logged rather than refused.
        """
        version = snapshot.get("model_version") if isinstance(snapshot, dict) else None
        if not isinstance(version, str):
            raise ValueError(f"malformed isolation_forest snapshot: {snapshot!r}")
        if version != self.version:
            log.info("snapshot from model %s, now scoring with model %s", version, self.version)
