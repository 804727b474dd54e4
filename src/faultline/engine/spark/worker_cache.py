"""What a Python worker process keeps between Spark tasks: the model and store connections.

Spark reuses its Python workers, so loading the model from the registry (seconds, for a forest
of a thousand trees) happens once per worker, not once per micro-batch.
"""

from __future__ import annotations

import threading

from faultline.config import Settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.models.base import LoadedModel
from faultline.models.champion import model_registry
from faultline.store import Store, open_store

# What decides the model; other settings (store, topic) share it.
_MODEL_SETTINGS = {"mlflow_uri", "data_dir", "model"}
_models: dict[str, LoadedModel] = {}
_stores: dict[str, Store] = {}
_lock = threading.Lock()


def worker_model(settings: Settings) -> LoadedModel:
    """The model the configured alias points to, loaded on first use and then kept, as the
    in-process engine keeps it."""
    key = settings.model_dump_json(include=_MODEL_SETTINGS)
    with _lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = model_registry(settings).current()
        return model


def fresh_pipeline(settings: Settings) -> DetectorPipeline:
    """The configured detectors, knowing no station yet."""
    return DetectorPipeline(build_detectors(settings, worker_model(settings)))


def worker_store(url: str) -> Store:
    """One store connection per worker process and URL, kept for the worker's life."""
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store
