"""What a Python worker process keeps between Spark tasks: models, schedules, store connections.

Spark reuses its Python workers, so loading a model from the registry (seconds, for a forest of
a thousand trees) happens once per worker and version, not once per micro-batch. Which version
a micro-batch scores with is the driver's decision, read from the model schedule in the
checkpoint (see `schedule`); the last `KEPT_VERSIONS` versions stay loaded, so a rollback to the
version just replaced costs no load. Without a schedule (a checkpoint older than schedules, or a
stage run outside a streaming query) the worker scores with the alias's version, loaded once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from faultline.config import Settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine.spark.schedule import ScheduleReader
from faultline.models.base import ChampionSource, LoadedModel
from faultline.models.champion import model_registry
from faultline.store import Store, open_store

log = logging.getLogger(__name__)

# The version in use and the one before it: a promotion and its rollback both find theirs.
KEPT_VERSIONS = 2
# What decides the model; other settings (store, topic) share it.
_MODEL_SETTINGS = {"mlflow_uri", "data_dir", "model"}
_models: dict[str, LoadedModel] = {}
_versions: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
_registries: dict[str, ChampionSource] = {}
_readers: dict[Path, ScheduleReader] = {}
_stores: dict[str, Store] = {}
_lock = threading.Lock()


class ScheduleMismatch(RuntimeError):
    """The schedule names a version the registry knows as another run: another registry than
    the one the checkpoint's job scored with."""


def worker_model(settings: Settings) -> LoadedModel:
    """The model the configured alias points to, loaded on first use and then kept."""
    key = settings.model_dump_json(include=_MODEL_SETTINGS)
    with _lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = _registry(key, settings).current()
        return model


def batch_model(settings: Settings, schedule: Path | None, batch_id: int | None) -> LoadedModel:
    """The model micro-batch `batch_id` scores with: the schedule's entry for it, or the
    alias's version without a schedule, a batch id, or an entry that applies."""
    entry = None
    if schedule is not None and batch_id is not None:
        with _lock:
            reader = _readers.get(schedule)
            if reader is None:
                reader = _readers[schedule] = ScheduleReader(schedule)
        entry = reader.entry_for(batch_id)
    if entry is None:
        return worker_model(settings)
    key = settings.model_dump_json(include=_MODEL_SETTINGS)
    # The run too: a schedule naming a version as another run must be refused, not served.
    kept = (key, entry.version, entry.run_id)
    with _lock:
        model = _versions.get(kept)
        if model is None:
            model = _registry(key, settings).load_version(entry.version)
            if model.info.run_id != entry.run_id:
                raise ScheduleMismatch(
                    f"the model schedule {schedule} names run {entry.run_id} as version "
                    f"{entry.version}, the registry at {settings.mlflow_uri} run "
                    f"{model.info.run_id}: run the checkpoint's job against its own registry"
                )
            _versions[kept] = model
            while len(_versions) > KEPT_VERSIONS:
                _versions.popitem(last=False)
            log.info("worker: loaded model version %s (run %s)", entry.version, entry.run_id)
        _versions.move_to_end(kept)
        return model


def _registry(key: str, settings: Settings) -> ChampionSource:
    """One registry client per model settings (callers hold `_lock`)."""
    registry = _registries.get(key)
    if registry is None:
        registry = _registries[key] = model_registry(settings)
    return registry


def fresh_pipeline(settings: Settings, model: LoadedModel) -> DetectorPipeline:
    """The configured detectors around `model`, knowing no station yet."""
    return DetectorPipeline(build_detectors(settings, model))


def worker_store(url: str) -> Store:
    """One store connection per worker process and URL, kept for the worker's life."""
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store
