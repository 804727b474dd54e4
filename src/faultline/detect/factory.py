"""The one detector registry: every detector kind by name, each built from the frozen Settings.

The engine, the Spark job, `faultline eval` and the tests all build detectors here, so what runs
is what was measured: `build_detectors` is the deployed set (the streaming detector the settings
name, then seed 000's forest when there is a model), `build_detector` one kind alone. Training a
model is not done here: the engines are not to see the training code (pyproject's contracts),
so a caller with a fitted model (the registry's champion, or `faultline eval`'s model of its
training rows) hands it in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from faultline.config import Settings
from faultline.detect.band_filter import BandFilterDetector
from faultline.detect.base import Detector
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.likelihood import AlarmedDetector
from faultline.detect.pipeline import Ensemble
from faultline.detect.relations import RelationsDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.detect.surprise import SurpriseDetector
from faultline.models.base import LoadedModel

DEPLOYED = "deployed"


@dataclass(frozen=True)
class DetectorKind:
    """How one kind of detector is built for `sensors` from the settings (and a model, when the
    kind scores with one: `needs_model`)."""

    name: str
    summary: str
    build: Callable[[Settings, Sequence[str], LoadedModel | None], Detector]
    needs_model: bool = False


def _surprise(s: Settings, sensors: Sequence[str], _: LoadedModel | None) -> Detector:
    d = s.detect
    return SurpriseDetector(
        sensors, threshold=d.surprise_threshold, warmup=d.warmup, calibrating=d.calibrating
    )


def _relations(s: Settings, sensors: Sequence[str], _: LoadedModel | None) -> Detector:
    d = s.detect
    return RelationsDetector(sensors, threshold=d.relations_threshold, warmup=d.warmup)


def _robust_z(s: Settings, sensors: Sequence[str], _: LoadedModel | None) -> Detector:
    d = s.detect
    return RobustStreamingDetector(sensors, threshold=d.threshold, warmup=d.warmup, alpha=d.alpha)


def _robust_z_likelihood(s: Settings, sensors: Sequence[str], m: LoadedModel | None) -> Detector:
    return AlarmedDetector(_robust_z(s, sensors, m))


def _band_filter(s: Settings, sensors: Sequence[str], _: LoadedModel | None) -> Detector:
    return BandFilterDetector(sensors, window=s.detect.band_window)


def _isolation_forest(s: Settings, sensors: Sequence[str], m: LoadedModel | None) -> Detector:
    # Alone, the forest is measured by its own verdicts: a kind that never flags would score
    # nothing. In the deployed set `model.forest_verdicts` decides (model_detector).
    return IsolationForestDetector(sensors, _needs(m), verdicts=True)


def _deployed(s: Settings, sensors: Sequence[str], m: LoadedModel | None) -> Detector:
    return Ensemble(build_detectors(s, m, sensors))


def _needs(model: LoadedModel | None) -> LoadedModel:
    if model is None:
        raise ValueError("isolation_forest scores with a trained model; none was given")
    return model


DETECTORS: dict[str, DetectorKind] = {
    k.name: k
    for k in (
        DetectorKind(
            DEPLOYED,
            "what `faultline up` runs: the settings' streaming detector and seed 000's forest, "
            "ORed as the pipeline ORs them",
            _deployed,
            needs_model=True,
        ),
        DetectorKind(
            "surprise",
            "calibrated multi-feature surprise with peak alarms (the default streaming detector)",
            _surprise,
        ),
        DetectorKind(
            "relations",
            "streaming PCA of a station's sensors together: Hotelling's T² and residual Q",
            _relations,
        ),
        DetectorKind("robust_z", "robust EWMA z-score per sensor", _robust_z),
        DetectorKind(
            "robust_z_likelihood",
            "robust_z through the anomaly-likelihood and hysteresis alarm layer",
            _robust_z_likelihood,
        ),
        DetectorKind(
            "band_filter",
            "seed 003: readings outside mean ± 3 std of a 60-reading window, > 1 per window",
            _band_filter,
        ),
        DetectorKind(
            "isolation_forest",
            "seed 000: StandardScaler + IsolationForest, alone and by its own verdicts",
            _isolation_forest,
            needs_model=True,
        ),
    )
}


def detector_kind(name: str) -> DetectorKind:
    try:
        return DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise ValueError(f"unknown detector {name!r}: choose one of {known}") from None


def build_detector(
    name: str,
    settings: Settings,
    model: LoadedModel | None = None,
    sensors: Sequence[str] | None = None,
) -> Detector:
    """One detector of kind `name` for `sensors` (default: the configured ones)."""
    chosen = settings.sensor_names if sensors is None else tuple(sensors)
    return detector_kind(name).build(settings, chosen, model)


def build_detectors(
    settings: Settings, model: LoadedModel | None, sensors: Sequence[str] | None = None
) -> list[Detector]:
    """The deployed set, in pipeline order: the streaming detector always; the trained model's
    detector when there is a model."""
    detectors = [build_detector(settings.detect.detector, settings, None, sensors)]
    if model is not None:
        detectors.append(model_detector(settings, model, sensors))
    return detectors


def model_detector(
    settings: Settings, model: LoadedModel, sensors: Sequence[str] | None = None
) -> Detector:
    """The detector that scores with `model`; stateless, so a new model is a new detector."""
    chosen = settings.sensor_names if sensors is None else tuple(sensors)
    return IsolationForestDetector(chosen, model, verdicts=settings.model.forest_verdicts)
