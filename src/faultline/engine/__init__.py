"""Engines that run the detector pipeline over a stream: in-process here, Spark in `spark`."""

from faultline.engine.engine import Engine, StepResult

__all__ = ["Engine", "StepResult"]
