"""The detectors `faultline eval` can measure, by name, each built for the sensors of the data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from faultline.config import DetectSettings, ModelSettings
from faultline.detect.band_filter import BandFilterDetector
from faultline.detect.base import Detector
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.likelihood import AlarmedDetector
from faultline.detect.relations import RelationsDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.detect.surprise import SurpriseDetector
from faultline.models.base import ModelInfo


@dataclass(frozen=True)
class EvalDetector:
    """How to build one detector for evaluation.

    `build(sensors, training)` gets the training rows (a frame of readings; possibly empty). A
    streaming detector ignores them: replay lets it learn them in stream order anyway. A detector
    with an offline model (`needs_training`) is fitted on them.
    """

    name: str
    summary: str
    build: Callable[[Sequence[str], pd.DataFrame], Detector]
    needs_training: bool = False


def _isolation_forest(sensors: Sequence[str], training: pd.DataFrame) -> Detector:
    # scikit-learn is imported here, not at module level: `faultline --help` lists these
    # detectors and should not pay for loading it.
    from faultline.models.isolation_forest import SklearnModel, train_isolation_forest

    if len(training) < 2:
        raise ValueError("isolation_forest needs training rows (e.g. --train-rows N)")
    settings = ModelSettings()
    pipeline = train_isolation_forest(
        training,
        sensors,
        n_estimators=settings.n_estimators,
        contamination=settings.contamination,
        seed=settings.seed,
    )
    info = ModelInfo(settings.name, "eval", "eval", "", 0, {"rows": str(len(training))})
    return IsolationForestDetector(sensors, SklearnModel(pipeline, info, sensors, training))


def _robust_z(sensors: Sequence[str]) -> RobustStreamingDetector:
    d = DetectSettings()
    return RobustStreamingDetector(sensors, threshold=d.threshold, warmup=d.warmup, alpha=d.alpha)


EVAL_DETECTORS: dict[str, EvalDetector] = {
    d.name: d
    for d in (
        EvalDetector(
            "band_filter",
            "seed 003: readings outside mean ± 3 std of a 60-reading window, > 1 per window",
            lambda sensors, _: BandFilterDetector(sensors, window=60),
        ),
        EvalDetector(
            "robust_z",
            "robust EWMA z-score per sensor (the engine's streaming detector)",
            lambda sensors, _: _robust_z(sensors),
        ),
        EvalDetector(
            "robust_z_likelihood",
            "robust_z through the anomaly-likelihood and hysteresis alarm layer",
            lambda sensors, _: AlarmedDetector(_robust_z(sensors)),
        ),
        EvalDetector(
            "surprise",
            "calibrated multi-feature surprise with peak alarms (production-default candidate)",
            lambda sensors, _: SurpriseDetector(sensors),
        ),
        EvalDetector(
            "relations",
            "streaming PCA of a station's sensors together: Hotelling's T² and residual Q",
            lambda sensors, _: RelationsDetector(sensors),
        ),
        EvalDetector(
            "isolation_forest",
            "seed 000: StandardScaler + IsolationForest (1000 trees, contamination 0.00125)",
            _isolation_forest,
            needs_training=True,
        ),
    )
}
DEFAULT_DETECTOR = "surprise"


def eval_detector(name: str) -> EvalDetector:
    try:
        return EVAL_DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(EVAL_DETECTORS))
        raise ValueError(f"unknown detector {name!r}: choose one of {known}") from None
