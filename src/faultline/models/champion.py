"""The deployment's champion model: the registry its settings name, and a first model for a plant
that has none, trained on fault-free simulated data.

Both engines need it below the runtime: the in-process engine through `Runtime.load_model`, the
Spark engine in its driver (to make sure a champion exists) and in every Python worker (to load
it), so it lives here rather than in faultline.runtime, which nothing below it may import.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from faultline.config import Settings
from faultline.models.base import ModelInfo
from faultline.models.registry import MlflowModelRegistry

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


def model_registry(settings: Settings) -> MlflowModelRegistry:
    """The registry of the configured model name and alias, inside the data directory."""
    return MlflowModelRegistry(
        tracking_uri=settings.mlflow_uri,
        artifact_root=settings.data_dir / "mlartifacts",
        name=settings.model.name,
        alias=settings.model.alias,
    )


def _training_params(settings: Settings) -> dict[str, str]:
    m = settings.model
    return {
        "n_estimators": str(m.n_estimators),
        "contamination": str(m.contamination),
        "train_samples": str(m.train_samples),
        "seed": str(m.seed),
        "training_data": "simulated, fault-free",
    }


def _train(settings: Settings) -> tuple[Pipeline, pd.DataFrame]:
    """Seed 000's model fitted on fault-free simulated data, with its drift reference sample."""
    from faultline.models.isolation_forest import train_isolation_forest
    from faultline.simulate import normal_frame

    m = settings.model
    frame = normal_frame(settings.sensors, m.train_samples, seed=m.seed)
    pipeline = train_isolation_forest(
        frame,
        settings.sensor_names,
        n_estimators=m.n_estimators,
        contamination=m.contamination,
        seed=m.seed,
    )
    # The reference sample is the drift baseline; a few thousand rows pin the distribution
    # down as well as all of them and keep the registered artifact small.
    return pipeline, frame.sample(n=min(len(frame), 5000), random_state=m.seed)


def ensure_model(settings: Settings, registry: MlflowModelRegistry) -> ModelInfo:
    """The registered champion, training one first when the registry has none.

    The registry's lock makes an engine and an API starting together train only once.
    """
    if not registry.has_champion():
        log.info("no %s model registered yet: training one", settings.model.name)
    return registry.ensure_champion(
        lambda: _train(settings), settings.sensor_names, _training_params(settings)
    )
