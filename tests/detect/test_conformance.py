"""The contract every detector keeps (see faultline.detect.base), run on every Detector class.

The suite finds the classes itself, as river's test_estimators.py does: it walks the modules of
faultline.detect and takes every concrete subclass of `Detector`. Each is built through the
registry (tests/detect/conftest.py); a class no registry kind builds fails the suite, so a new
detector cannot skip it. Protocol checks run on all of them (shape, determinism, snapshot and
dump round trips, station independence, NaN input, empty batch, forget); quality checks (a spike
is flagged, higher scores mean more anomalous) where they apply.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import numpy as np
import pandas as pd
import pytest

import faultline.detect
from faultline.detect.base import Detector, Scores
from faultline.schema import STATION_ID, empty_readings
from tests.detect.conftest import DETECTOR_FACTORIES, SENSORS, STDS, DetectorFactory, normal_frame


def detector_classes() -> list[type[Detector]]:
    """Every concrete Detector subclass defined in a module of faultline.detect."""
    found: dict[str, type[Detector]] = {}
    for info in pkgutil.walk_packages(faultline.detect.__path__, "faultline.detect."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, Detector)
                and not inspect.isabstract(obj)
                and obj.__module__ == module.__name__
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _factories() -> list[DetectorFactory]:
    """One parameter per (class found, factory building it); a class without one fails."""
    built = {f.id: type(f.build()) for f in DETECTOR_FACTORIES}
    out: list[DetectorFactory] = []
    for cls in detector_classes():
        mine = [f for f in DETECTOR_FACTORIES if built[f.id] is cls]
        out.extend(mine or [DetectorFactory(f"unbuilt:{cls.__name__}", _unbuilt(cls), 0)])
    return out


def _unbuilt(cls: type[Detector]):  # type: ignore[no-untyped-def]
    def build() -> Detector:
        pytest.fail(f"{cls.__module__}.{cls.__name__}: no registry kind builds it")

    return build


FACTORIES = _factories()


@pytest.fixture(params=FACTORIES, ids=lambda f: f.id)
def factory(request: pytest.FixtureRequest) -> DetectorFactory:
    return request.param


@pytest.fixture(params=[f for f in FACTORIES if f.ranks_spikes], ids=lambda f: f.id)
def ranking(request: pytest.FixtureRequest) -> DetectorFactory:
    return request.param


def test_the_suite_finds_every_detector_class() -> None:
    names = {cls.__name__ for cls in detector_classes()}
    # The ones known today; the suite must find at least these by itself.
    assert {
        "SurpriseDetector",
        "RelationsDetector",
        "RobustStreamingDetector",
        "BandFilterDetector",
        "AlarmedDetector",
        "IsolationForestDetector",
        "Ensemble",
    } <= names
    assert "PerStationDetector" not in names  # abstract


def check_shape(scores: Scores, n: int) -> None:
    """Invariants of any output: aligned, typed, and no verdict means no anomaly."""
    assert scores.score.shape == scores.is_anomaly.shape == scores.sensor_mask.shape == (n,)
    assert scores.score.dtype == np.float64
    assert scores.is_anomaly.dtype == bool
    assert scores.sensor_mask.dtype == np.int64
    assert not scores.is_anomaly[np.isnan(scores.score)].any()
    if scores.learning is not None:  # still calibrating: scored, never anomalous
        assert scores.learning.shape == (n,) and scores.learning.dtype == bool
        assert not scores.is_anomaly[scores.learning].any()
        assert not scores.learning[np.isnan(scores.score)].any()
    assert (scores.sensor_mask >= 0).all()
    assert (scores.sensor_mask < 1 << len(SENSORS)).all()


def occurrence(frame: pd.DataFrame) -> np.ndarray:
    return frame.groupby(STATION_ID, sort=False).cumcount().to_numpy()


def test_same_input_gives_identical_scores(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=6, rounds=factory.warmup + 60, seed=1)
    first = factory.build().process(frame)
    second = factory.build().process(frame)
    check_shape(first, len(frame))
    np.testing.assert_array_equal(first.score, second.score)
    np.testing.assert_array_equal(first.is_anomaly, second.is_anomaly)
    np.testing.assert_array_equal(first.sensor_mask, second.sensor_mask)
    assert np.isfinite(first.score[occurrence(frame) >= factory.warmup]).all()


def test_snapshot_round_trip_continues_exactly(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=5, rounds=2 * factory.warmup + 80, seed=2)
    frame.loc[frame.index[-3], list(SENSORS)] += 12 * STDS
    uninterrupted = factory.build().process(frame)
    half = len(frame) // 2
    before = factory.build()
    before.process(frame.iloc[:half])
    snapshot = json.loads(json.dumps(before.snapshot(), allow_nan=False))
    after = factory.build()
    after.restore(snapshot)
    resumed = after.process(frame.iloc[half:])
    np.testing.assert_array_equal(resumed.score, uninterrupted.score[half:])
    np.testing.assert_array_equal(resumed.is_anomaly, uninterrupted.is_anomaly[half:])
    np.testing.assert_array_equal(resumed.sensor_mask, uninterrupted.sensor_mask[half:])
    assert np.isfinite(resumed.score).all()
    assert resumed.is_anomaly[-3] or not factory.flags_spikes


def test_no_verdict_during_warmup_even_for_a_spike(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=4, rounds=factory.warmup + 10, seed=3)
    first_rows = np.flatnonzero(occurrence(frame) == 0)
    frame.loc[frame.index[first_rows], list(SENSORS)] += 20 * STDS
    scores = factory.build().process(frame)
    check_shape(scores, len(frame))
    warming = occurrence(frame) < factory.warmup
    assert np.isnan(scores.score[warming]).all()
    assert not scores.is_anomaly[warming].any()
    assert np.isfinite(scores.score[~warming]).all()
    spiked_after_warmup = first_rows[~warming[first_rows]]
    assert scores.is_anomaly[spiked_after_warmup].all() or not factory.flags_spikes


@pytest.mark.parametrize("how", ["nan_column", "absent_column", "scattered"])
def test_missing_sensors_give_no_verdict_for_what_is_missing(
    factory: DetectorFactory, how: str
) -> None:
    frame = normal_frame(stations=4, rounds=factory.warmup + 30, seed=4)
    spike = len(frame) - 2
    frame.loc[spike, list(SENSORS)] += 15 * STDS
    missing = np.zeros((len(frame), len(SENSORS)), bool)
    if how == "nan_column":
        frame["humidity"] = np.nan
        missing[:, 1] = True
    elif how == "absent_column":
        frame = frame.drop(columns="humidity")
        missing[:, 1] = True
    else:
        missing = np.random.default_rng(4).random(missing.shape) < 0.3
        missing[spike] = False
        for i, name in enumerate(SENSORS):
            frame.loc[missing[:, i], name] = np.nan
    scores = factory.build().process(frame)
    check_shape(scores, len(frame))
    for i in range(len(SENSORS)):
        assert not (scores.sensor_mask[missing[:, i]] >> i & 1).any()
    assert np.isnan(scores.score[missing.all(axis=1)]).all()
    late_and_complete = ~missing.any(axis=1) & (occurrence(frame) >= factory.warmup + 25)
    assert np.isfinite(scores.score[late_and_complete]).all()
    if np.isfinite(scores.score[spike]) and factory.flags_spikes:
        assert scores.is_anomaly[spike]
        assert scores.sensor_mask[spike] > 0


def test_non_finite_readings_do_not_crash_or_corrupt_later_scores(
    factory: DetectorFactory,
) -> None:
    clean = normal_frame(stations=3, rounds=factory.warmup + 30, seed=5)
    expected = factory.build().process(clean)
    rng = np.random.default_rng(5)
    bad = clean.iloc[::7].copy()
    for name in SENSORS:
        bad[name] = rng.choice([np.nan, np.inf, -np.inf], len(bad))
    nan_only = clean.iloc[3::11].copy()
    nan_only[list(SENSORS)] = np.nan
    # Sorting the shared index puts each bad reading right after the clean one it copies.
    parts = {"clean": clean, "bad": bad, "nan": nan_only}
    mixed = pd.concat([p.assign(kind=k) for k, p in parts.items()]).sort_index(kind="stable")
    kind = mixed.pop("kind").to_numpy()
    got = factory.build().process(mixed.reset_index(drop=True))
    check_shape(got, len(mixed))
    np.testing.assert_array_equal(got.score[kind == "clean"], expected.score)
    np.testing.assert_array_equal(got.is_anomaly[kind == "clean"], expected.is_anomaly)
    np.testing.assert_array_equal(got.sensor_mask[kind == "clean"], expected.sensor_mask)
    assert np.isnan(got.score[kind == "nan"]).all()
    assert not got.is_anomaly[kind == "nan"].any()


@pytest.mark.parametrize("sign", [1, -1])
def test_higher_score_means_more_anomalous(ranking: DetectorFactory, sign: int) -> None:
    factory = ranking
    # Every sensor of the reading is off by 10 sigma: seed 000's forest saturates on a spike in
    # one sensor alone (it scores like a 4-sigma one, below the most unusual normal readings).
    frame = normal_frame(stations=5, rounds=factory.warmup + 60, seed=6)
    spiked = np.flatnonzero(occurrence(frame) == factory.warmup + 40)[[1, 3]]
    frame.loc[frame.index[spiked], list(SENSORS)] += sign * 10 * STDS
    scores = factory.build().process(frame)
    normal = np.ones(len(frame), bool)
    normal[spiked] = False
    normal &= np.isfinite(scores.score)
    assert scores.score[spiked].min() > scores.score[normal].max()
    if factory.flags_spikes:
        assert scores.is_anomaly[spiked].all()
        assert (scores.sensor_mask[spiked] > 0).all()


def test_stations_are_independent(factory: DetectorFactory) -> None:
    both = normal_frame(stations=2, rounds=factory.warmup + 30, seed=7)
    other = both[STATION_ID] == "s001"
    both.loc[other, "temperature"] += 30 * STDS[0]  # wild data in the other station
    alone = both[~other]
    together = factory.build().process(both)
    single = factory.build().process(alone)
    np.testing.assert_array_equal(together.score[~other.to_numpy()], single.score)
    np.testing.assert_array_equal(together.is_anomaly[~other.to_numpy()], single.is_anomaly)


def test_empty_frame(factory: DetectorFactory) -> None:
    detector = factory.build()
    empty = empty_readings(SENSORS)
    for scores in (detector.process(empty), detector.score(empty)):
        check_shape(scores, 0)
    detector.learn(empty)
    restored = factory.build()
    restored.restore(json.loads(json.dumps(detector.snapshot())))
    frame = normal_frame(stations=2, rounds=factory.warmup + 5, seed=8)
    np.testing.assert_array_equal(
        restored.process(frame).score, factory.build().process(frame).score
    )


def test_dump_and_load_continue_exactly(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=5, rounds=2 * factory.warmup + 80, seed=9)
    frame.loc[frame.index[-3], list(SENSORS)] += 12 * STDS
    uninterrupted = factory.build().process(frame)
    half = len(frame) // 2
    before = factory.build()
    before.process(frame.iloc[:half])
    after = factory.build()
    after.load(before.dump())
    resumed = after.process(frame.iloc[half:])
    np.testing.assert_array_equal(resumed.score, uninterrupted.score[half:])
    np.testing.assert_array_equal(resumed.is_anomaly, uninterrupted.is_anomaly[half:])
    np.testing.assert_array_equal(resumed.sensor_mask, uninterrupted.sensor_mask[half:])


def test_a_dump_of_some_stations_replaces_only_theirs(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=4, rounds=factory.warmup + 20, seed=10)
    later = normal_frame(stations=4, rounds=10, seed=11)
    later["ts"] += 10**7
    trained = factory.build()
    trained.process(frame)
    target = factory.build()
    target.process(frame[frame[STATION_ID].isin(["s002", "s003"])])
    target.load(trained.dump(["s000", "s001"]))
    reference = factory.build()
    reference.process(frame)
    np.testing.assert_array_equal(target.process(later).score, reference.process(later).score)


def test_garbage_is_refused_by_load(factory: DetectorFactory) -> None:
    detector = factory.build()
    for garbage in (b"", b"\x00\x01not a dump", b"\x93\x01\x02\x03"):
        with pytest.raises(ValueError):
            detector.load(garbage)


def test_a_forgotten_station_behaves_like_a_new_one(factory: DetectorFactory) -> None:
    frame = normal_frame(stations=3, rounds=factory.warmup + 20, seed=12)
    fresh = normal_frame(stations=3, rounds=factory.warmup + 20, seed=13)
    fresh["ts"] += 10**8
    detector = factory.build()
    detector.process(frame)
    detector.forget(["s001", "never-seen"])
    # s001 starts over as a new station; s000 and s002 go on with what they learned, also
    # when a new station takes the row s001 held.
    newcomer = normal_frame(stations=1, rounds=factory.warmup + 20, seed=14, station_prefix="n")
    newcomer["ts"] += 10**8
    mixed = pd.concat([fresh, newcomer]).sort_values("ts", kind="stable").reset_index(drop=True)
    got = detector.process(mixed)
    unforgotten = factory.build()
    unforgotten.process(frame[frame[STATION_ID] != "s001"])
    expected = unforgotten.process(mixed)
    np.testing.assert_array_equal(got.score, expected.score)
    np.testing.assert_array_equal(got.is_anomaly, expected.is_anomaly)
    np.testing.assert_array_equal(got.sensor_mask, expected.sensor_mask)
    if factory.warmup:
        again = (mixed[STATION_ID] == "s001").to_numpy()
        assert np.isnan(got.score[np.flatnonzero(again)[: factory.warmup]]).all()
