"""The in-process engine's hot swap: the pipeline follows the model a watcher has loaded.

`Engine` asks its pipeline callable once per batch and scores, checkpoints and stores the whole
batch with what it got, so a swap falls between two batches: one batch, one model version. The
new pipeline holds the same streaming detector objects as the old one (only the model's
detector is new), so the stations' state, warm-up and checkpoints carry on untouched; the
model's detector has no station state (its checkpoint part names the version it scored with,
and a checkpoint of the other version loads as well). Loading happens in the watcher's thread
(models/watch.py), never here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from faultline.detect import Detector, DetectorPipeline
from faultline.metrics import Metrics
from faultline.models.base import LoadedModel

log = logging.getLogger(__name__)


class ModelFollower:
    """The engine's pipeline callable: `pipeline`, rebuilt around `model()` whenever that is
    another model than the one it scores with (`detector_for` makes the model's detector)."""

    def __init__(
        self,
        pipeline: DetectorPipeline,
        model: LoadedModel,
        models: Callable[[], LoadedModel],
        detector_for: Callable[[LoadedModel], Detector],
        metrics: Metrics,
    ) -> None:
        self._pipeline = pipeline
        self._model = model
        self._models = models
        self._detector_for = detector_for
        self._metrics = metrics

    def __call__(self) -> DetectorPipeline:
        model = self._models()
        if model is not self._model:
            self._swap(model)
        return self._pipeline

    def _swap(self, model: LoadedModel) -> None:
        old = self._model.info
        new = model.info
        self._pipeline = self._pipeline.replacing(self._detector_for(model))
        self._model = model
        info = self._metrics.model_info
        info.remove(old.name, old.run_id)
        info.labels(name=new.name, version=new.run_id).set(1)
        log.info(
            "engine: scoring with model %s version %s (run %s) from the next batch on, was "
            "version %s (run %s)",
            new.name,
            new.version,
            new.run_id,
            old.version,
            old.run_id,
        )
