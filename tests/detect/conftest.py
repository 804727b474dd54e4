"""Detectors under the conformance suite, and the reading batches the tests feed them.

To put a new detector under the suite, append a `DetectorFactory` to `DETECTOR_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from faultline.config import DEFAULT_SENSORS
from faultline.detect.base import Detector
from faultline.detect.isolation_forest import IsolationForestDetector
from faultline.detect.relations import RelationsDetector
from faultline.detect.robust import RobustStreamingDetector
from faultline.detect.surprise import SurpriseDetector
from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.schema import RECEIVED_AT, SEQ, STATION_ID, TS, TS_ASSIGNED

SENSORS: tuple[str, ...] = tuple(DEFAULT_SENSORS)
MEANS = np.array([DEFAULT_SENSORS[s].mean for s in SENSORS])
STDS = np.array([DEFAULT_SENSORS[s].std for s in SENSORS])
START_MS = 1_767_225_600_000


@dataclass(frozen=True)
class DetectorFactory:
    id: str
    build: Callable[[], Detector]  # a fresh detector over SENSORS
    warmup: int  # readings of a station before its first verdict (0: from the first reading)


def normal_frame(stations: int, rounds: int, seed: int, station_prefix: str = "s") -> pd.DataFrame:
    """`rounds` readings per station of independent normal noise around the default sensors,
    ordered by time with stations interleaved as a live stream would deliver them."""
    rng = np.random.default_rng(seed)
    n = stations * rounds
    ids = np.tile([f"{station_prefix}{i:03d}" for i in range(stations)], rounds)
    seq = np.repeat(np.arange(rounds, dtype=np.int64), stations)
    ts = START_MS + seq * 1000
    frame = pd.DataFrame(
        {
            STATION_ID: ids.astype(object),
            TS: ts,
            SEQ: seq,
            TS_ASSIGNED: np.zeros(n, bool),
            RECEIVED_AT: ts + 5,
        }
    )
    values = rng.normal(MEANS, STDS, size=(n, len(SENSORS)))
    for i, name in enumerate(SENSORS):
        frame[name] = values[:, i]
    return frame


def model_info(run_id: str = "test-run") -> ModelInfo:
    return ModelInfo("test-model", "1", run_id, "champion", START_MS)


@cache
def small_model() -> SklearnModel:
    """A 50-tree model trained once per session on the same distribution as `normal_frame`."""
    train = normal_frame(stations=1, rounds=4000, seed=12345)
    pipeline = train_isolation_forest(
        train, SENSORS, n_estimators=50, contamination=0.00125, seed=0
    )
    return SklearnModel(pipeline, model_info(), SENSORS, train.iloc[:1000])


DETECTOR_FACTORIES: list[DetectorFactory] = [
    DetectorFactory("robust_z", lambda: RobustStreamingDetector(SENSORS, warmup=20), warmup=20),
    DetectorFactory(
        "isolation_forest", lambda: IsolationForestDetector(SENSORS, small_model()), warmup=0
    ),
    DetectorFactory("surprise", lambda: SurpriseDetector(SENSORS, warmup=25), warmup=25),
    DetectorFactory(
        "relations", lambda: RelationsDetector(SENSORS, warmup=25, refit=10), warmup=25
    ),
]
