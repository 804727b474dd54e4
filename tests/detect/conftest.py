"""Detectors under the conformance suite, and the reading batches the tests feed them.

Every detector is built the way the engines and `faultline eval` build it: through the registry
(faultline.detect.factory) from one Settings object. The suite finds the Detector classes by
itself (tests/detect/test_conformance.py); a class no registry kind builds fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from faultline.config import DEFAULT_SENSORS, Settings, load_settings
from faultline.detect.base import Detector
from faultline.detect.factory import DETECTORS, build_detector, model_detector
from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.schema import RECEIVED_AT, SEQ, STATION_ID, TS, TS_ASSIGNED

# The NAB corpus fixtures, for the detectors' NAB floors (tests/detect/test_surprise.py).
from tests.evaluate.conftest import nab_corpus, nab_root  # noqa: F401

SENSORS: tuple[str, ...] = tuple(DEFAULT_SENSORS)
MEANS = np.array([DEFAULT_SENSORS[s].mean for s in SENSORS])
STDS = np.array([DEFAULT_SENSORS[s].std for s in SENSORS])
START_MS = 1_767_225_600_000


@dataclass(frozen=True)
class DetectorFactory:
    id: str
    build: Callable[[], Detector]  # a fresh detector over SENSORS
    warmup: int  # readings of a station before its first verdict (0: from the first reading)
    # Quality, where it applies: a reading far off on every sensor is flagged (seed 003's band
    # filter never flags a lone reading, by design; a score-only forest flags nothing).
    flags_spikes: bool = True
    ranks_spikes: bool = True  # a reading off on every sensor scores above every normal one


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


WARMUP = 25
# The registry's settings for the suite: short warm-ups, calibrating stages and windows, so
# frames stay small; the forest votes (and, beside it, only scores).
_DETECT = {"warmup": WARMUP, "calibrating": WARMUP + 10, "band_window": 10}
SETTINGS: Settings = load_settings(detect=_DETECT, model={"forest_verdicts": True})
SCORE_ONLY: Settings = load_settings(detect=_DETECT, model={"forest_verdicts": False})
# How many readings each kind withholds a verdict for under SETTINGS.
_WARMUPS = {
    "isolation_forest": 0,
    "band_filter": 9,  # the window less the reading itself
    "robust_z_likelihood": WARMUP + 150,  # robust_z's, then the likelihood's 150 raw scores
}


def registry_factory(name: str) -> DetectorFactory:
    def build() -> Detector:
        model = small_model() if DETECTORS[name].needs_model else None
        return build_detector(name, SETTINGS, model, SENSORS)

    return DetectorFactory(
        name,
        build,
        _WARMUPS.get(name, WARMUP),
        flags_spikes=name != "band_filter",
        # The likelihood layer judges a short window's mean: the readings after a spike score
        # above the spike itself.
        ranks_spikes=name not in ("band_filter", "robust_z_likelihood"),
    )


DETECTOR_FACTORIES: list[DetectorFactory] = [
    *(registry_factory(name) for name in DETECTORS),
    DetectorFactory(
        "isolation_forest_score_only",
        lambda: model_detector(SCORE_ONLY, small_model(), SENSORS),
        0,
        flags_spikes=False,
    ),
]
