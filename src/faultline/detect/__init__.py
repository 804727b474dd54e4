"""Detectors: engine-agnostic scoring of columnar reading batches."""

from faultline.detect.base import Detector, Scores, rounds
from faultline.detect.pipeline import DetectorPipeline

__all__ = ["Detector", "DetectorPipeline", "Scores", "rounds"]
