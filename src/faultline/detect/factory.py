"""The detectors a configuration asks for, in pipeline order."""

from __future__ import annotations

from faultline.config import Settings
from faultline.detect.base import Detector
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.relations import RelationsDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.detect.surprise import SurpriseDetector
from faultline.models.base import LoadedModel


def build_detectors(settings: Settings, model: LoadedModel | None) -> list[Detector]:
    """The streaming detector always; the trained model's detector when there is a model."""
    sensors = settings.sensor_names
    d = settings.detect
    streaming: Detector
    if d.detector == "surprise":
        streaming = SurpriseDetector(sensors, threshold=d.surprise_threshold, warmup=d.warmup)
    elif d.detector == "relations":
        streaming = RelationsDetector(sensors, threshold=d.relations_threshold, warmup=d.warmup)
    else:
        streaming = RobustStreamingDetector(
            sensors, threshold=d.threshold, warmup=d.warmup, alpha=d.alpha
        )
    detectors: list[Detector] = [streaming]
    if model is not None:
        detectors.append(model_detector(settings, model))
    return detectors


def model_detector(settings: Settings, model: LoadedModel) -> Detector:
    """The detector that scores with `model`; stateless, so a new model is a new detector."""
    return IsolationForestDetector(settings.sensor_names, model)
