"""The compiled forest scores exactly as scikit-learn does, and loads nothing but numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from faultline.models.compiled import (
    CompiledForest,
    CompiledMismatch,
    NotCompilable,
    check_set,
    compile_forest,
    verify,
)
from faultline.models.isolation_forest import train_isolation_forest
from tests.models.conftest import SENSORS, normal_readings


def fitted(rows: int = 2000, **forest: object) -> tuple[Pipeline, np.ndarray]:
    x = normal_readings(rows, seed=1).to_numpy()
    params = {"n_estimators": 50, "random_state": 0, "contamination": 0.01, **forest}
    pipeline = Pipeline([("scaler", StandardScaler()), ("forest", IsolationForest(**params))])
    return pipeline.fit(x), x


def probe(rows: int = 3000) -> np.ndarray:
    x = normal_readings(rows, seed=5, shift={"humidity": 1.0}).to_numpy()
    return np.concatenate([x, check_set(x[:500], seed=3)])


@pytest.mark.parametrize(
    "forest",
    [
        {},
        {"max_features": 0.67},  # trees number their features within a subset
        {"max_samples": 40},  # shallower trees
        {"max_samples": 1.0, "n_estimators": 5},  # 2000-row subsamples, 11 levels
        {"contamination": "auto", "bootstrap": True},
    ],
)
def test_scores_are_scikit_learns_bit_for_bit(forest: dict[str, object]) -> None:
    pipeline, _ = fitted(**forest)
    compiled = compile_forest(pipeline)
    x = probe()
    np.testing.assert_array_equal(compiled.anomaly_score(x), -pipeline.score_samples(x))
    np.testing.assert_array_equal(compiled.anomaly_score(x[:5]), -pipeline.score_samples(x[:5]))


def test_the_training_pipeline_compiles_and_ties_on_thresholds_decide_as_sklearn() -> None:
    pipeline = train_isolation_forest(
        normal_readings(1000, seed=2), SENSORS, n_estimators=20, contamination=0.05, seed=4
    )
    compiled = compile_forest(pipeline)
    # Rows exactly on split points (after scaling) are where float32 rounding would bite.
    forest = pipeline.named_steps["forest"]
    scaler = pipeline.named_steps["scaler"]
    cuts = [t for e in forest.estimators_ for t in e.tree_.threshold[e.tree_.feature >= 0]][:300]
    on_cut = np.tile(scaler.mean_, (len(cuts), 1))
    on_cut[:, 0] = np.asarray(cuts) * scaler.scale_[0] + scaler.mean_[0]
    np.testing.assert_array_equal(compiled.anomaly_score(on_cut), -pipeline.score_samples(on_cut))


def test_a_forest_fitted_on_one_row_scores_as_sklearn() -> None:
    pipeline, x = fitted(rows=1, n_estimators=3)
    np.testing.assert_array_equal(
        compile_forest(pipeline).anomaly_score(x), -pipeline.score_samples(x)
    )


def test_other_pipelines_are_not_compilable() -> None:
    x = normal_readings(200, seed=1).to_numpy()
    other = Pipeline([("scaler", MinMaxScaler()), ("forest", IsolationForest(n_estimators=3))])
    with pytest.raises(NotCompilable, match="MinMaxScaler \\+ IsolationForest"):
        compile_forest(other.fit(x))


def test_bad_features_are_refused() -> None:
    compiled = compile_forest(fitted(n_estimators=3)[0])
    with pytest.raises(ValueError, match="rows of 3 values"):
        compiled.anomaly_score(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        compiled.anomaly_score(np.array([[1.0, np.inf, 2.0]]))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    pipeline, _ = fitted(n_estimators=10)
    compiled = compile_forest(pipeline)
    compiled.save(tmp_path / "forest.npz")
    loaded = CompiledForest.load(tmp_path / "forest.npz")
    x = probe(500)
    np.testing.assert_array_equal(loaded.anomaly_score(x), compiled.anomaly_score(x))
    assert (loaded.n_trees, loaded.n_features, loaded.depth) == (10, 3, 8)


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    compiled = compile_forest(fitted(n_estimators=3)[0])
    path = tmp_path / "forest.npz"
    fields = {f: getattr(compiled, f) for f in ("mean", "scale", "threshold", "value")}
    np.savez(path, format_version=1, denominator=1.0, feature=np.array([object()]), **fields)
    with pytest.raises(ValueError, match="allow_pickle"):
        CompiledForest.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature": "out of range"}, "feature it does not have"),
        ({"value": "not perfect"}, "not a set of perfect binary trees"),
        ({"scale": "short"}, "mismatched scaler arrays"),
        ({"format_version": 2}, "format 2, expected 1"),
    ],
)
def test_load_refuses_inconsistent_arrays(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    compiled = compile_forest(fitted(n_estimators=3)[0])
    fields: dict[str, object] = {
        f: getattr(compiled, f)
        for f in ("mean", "scale", "feature", "threshold", "value", "denominator")
    }
    fields["format_version"] = change.get("format_version", 1)
    if "feature" in change:
        fields["feature"] = compiled.feature + 3
    if "value" in change:
        fields["value"] = compiled.value[:, :-1]
    if "scale" in change:
        fields["scale"] = compiled.scale[:2]
    path = tmp_path / "forest.npz"
    np.savez(path, **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        CompiledForest.load(path)


def test_verify_names_disagreeing_scores_and_decisions() -> None:
    pipeline, x = fitted(n_estimators=20)
    compiled = compile_forest(pipeline)
    rows = check_set(x[:500])
    scores = -pipeline.score_samples(rows)
    threshold = -float(pipeline.named_steps["forest"].offset_)
    verify(compiled, scores, rows, threshold)
    nudged = replace(compiled, value=compiled.value * (1 + 1e-12))
    with pytest.raises(CompiledMismatch, match=r"scores \d+ of 1000 rows differently"):
        verify(nudged, scores, rows, threshold)
    moved = replace(compiled, threshold=compiled.threshold + np.float32(0.5))
    with pytest.raises(CompiledMismatch, match=r"decides \d+ of 1000 rows differently"):
        verify(moved, scores, rows, threshold)


def test_the_engine_s_detectors_score_with_the_compiled_form_as_with_sklearn() -> None:
    from faultline.config import load_settings
    from faultline.detect.factory import build_detectors
    from faultline.models.base import ModelInfo
    from faultline.models.isolation_forest import SklearnModel
    from faultline.simulate import simulate_frame

    settings = load_settings(model={"forest_verdicts": True})  # so its verdicts compare too
    pipeline, _ = fitted(n_estimators=30)
    reference = normal_readings(500, seed=2)
    info = ModelInfo("m", "1", "run", "champion", 0)
    compiled = SklearnModel(pipeline, info, SENSORS, reference, compile_forest(pipeline))
    plain = SklearnModel(pipeline, info, SENSORS, reference)
    assert (compiled.scorer, plain.scorer) == ("compiled", "scikit-learn")
    frame, _ = simulate_frame(settings.sensors, 40, stations=5, seed=3, faults_per_station_hour=60)
    fast, slow = (build_detectors(settings, m)[-1].score(frame) for m in (compiled, plain))
    np.testing.assert_array_equal(fast.score, slow.score)
    np.testing.assert_array_equal(fast.is_anomaly, slow.is_anomaly)
    np.testing.assert_array_equal(fast.sensor_mask, slow.sensor_mask)
