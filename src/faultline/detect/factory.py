"""The detectors a configuration asks for, in pipeline order."""

from __future__ import annotations

from faultline.config import Settings
from faultline.detect.base import Detector
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.models.base import LoadedModel


def build_detectors(settings: Settings, model: LoadedModel | None) -> list[Detector]:
    """The streaming detector always; the trained model's detector when there is a model."""
    sensors = settings.sensor_names
    detectors: list[Detector] = [
        RobustStreamingDetector(
            sensors,
            threshold=settings.detect.threshold,
            warmup=settings.detect.warmup,
            alpha=settings.detect.alpha,
        )
    ]
    if model is not None:
        detectors.append(IsolationForestDetector(sensors, model))
    return detectors
