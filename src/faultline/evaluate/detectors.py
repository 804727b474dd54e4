"""The detectors `faultline eval` can measure: the registry's kinds (faultline.detect.factory),
built from the same settings as the engine, for the sensors of the data.

The default is `deployed`, what `faultline up` runs: the settings' streaming detector and seed
000's forest, ORed as the pipeline ORs them. Its forest is fitted on the evaluation's training
rows with the settings' model parameters, as the engine's first model is fitted on simulated
normal readings (models/champion.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from faultline.config import Settings, load_settings
from faultline.detect.base import Detector
from faultline.detect.factory import DEPLOYED, DETECTORS, build_detector, detector_kind
from faultline.models.base import LoadedModel, ModelInfo


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


def fit_model(settings: Settings, sensors: Sequence[str], training: pd.DataFrame) -> LoadedModel:
    """Seed 000's model of `training`, fitted and compiled with the settings' parameters."""
    # scikit-learn is imported here, not at module level: `faultline --help` lists these
    # detectors and should not pay for loading it.
    from faultline.models.compiled import NotCompilable, compile_forest
    from faultline.models.isolation_forest import SklearnModel, train_isolation_forest

    if len(training) < 2:
        raise ValueError("seed 000's forest needs training rows (e.g. --train-rows N)")
    m = settings.model
    pipeline = train_isolation_forest(
        training, sensors, n_estimators=m.n_estimators, contamination=m.contamination, seed=m.seed
    )
    try:
        compiled = compile_forest(pipeline)  # scores exactly as scikit-learn, many times faster
    except NotCompilable:
        compiled = None
    info = ModelInfo(m.name, "eval", "eval", "", 0, {"rows": str(len(training))})
    reference = training.sample(n=min(len(training), 5000), random_state=m.seed)
    return SklearnModel(pipeline, info, sensors, reference, compiled)


def eval_detector(name: str = DEPLOYED, settings: Settings | None = None) -> EvalDetector:
    """The registry's kind `name` built from `settings` (default: the defaults and the
    environment, as `load_settings()` reads them when the detector is built)."""
    kind = detector_kind(name)

    def build(sensors: Sequence[str], training: pd.DataFrame) -> Detector:
        s = settings if settings is not None else load_settings()
        model = fit_model(s, sensors, training) if kind.needs_model else None
        return build_detector(name, s, model, sensors)

    return EvalDetector(kind.name, kind.summary, build, needs_training=kind.needs_model)


EVAL_DETECTORS: dict[str, EvalDetector] = {name: eval_detector(name) for name in DETECTORS}
DEFAULT_DETECTOR = DEPLOYED
