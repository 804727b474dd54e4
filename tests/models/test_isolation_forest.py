from __future__ import annotations

import numpy as np
import pytest

from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from tests.models.conftest import SENSORS, normal_readings

INFO = ModelInfo("m", "1", "run", "champion", 0)


def train(seed: int = 0, rows: int = 2000) -> SklearnModel:
    frame = normal_readings(rows, seed=1)
    pipeline = train_isolation_forest(
        frame, SENSORS, n_estimators=40, contamination=0.01, seed=seed
    )
    return SklearnModel(pipeline, INFO, SENSORS, frame.iloc[:300])


def test_training_is_deterministic_for_a_seed() -> None:
    x = normal_readings(500, seed=2).to_numpy()
    np.testing.assert_array_equal(train(0).anomaly_score(x), train(0).anomaly_score(x))
    assert not np.array_equal(train(0).anomaly_score(x), train(1).anomaly_score(x))


def test_scores_and_verdicts_match_the_pipeline() -> None:
    model = train()
    x = normal_readings(3000, seed=3, shift={"humidity": 1.5}).to_numpy()
    np.testing.assert_array_equal(model.anomaly_score(x), -model.pipeline.score_samples(x))
    verdict = model.is_anomaly(x)
    np.testing.assert_array_equal(verdict, model.pipeline.predict(x) == -1)
    assert 0 < verdict.sum() < len(x)


def test_the_forest_is_configured_as_asked() -> None:
    forest = train(seed=7).pipeline.named_steps["forest"]
    assert (forest.n_estimators, forest.contamination, forest.random_state, forest.n_jobs) == (
        40,
        0.01,
        7,
        1,
    )


def test_an_empty_batch_scores_to_nothing() -> None:
    model = train()
    empty = np.empty((0, len(SENSORS)))
    assert model.anomaly_score(empty).shape == (0,)
    assert model.is_anomaly(empty).shape == (0,)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.zeros((2, 2)), "expected rows of 3 values"),
        (np.zeros(3), "expected rows of 3 values"),
        (np.array([[25.0, np.nan, 50.0]]), "finite"),
    ],
)
def test_bad_features_are_refused(features: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train().anomaly_score(features)


def test_training_data_must_be_complete() -> None:
    frame = normal_readings(100, seed=4)
    with pytest.raises(ValueError, match="lacks sensor columns \\['noise_level'\\]"):
        train_isolation_forest(
            frame.drop(columns="noise_level"), SENSORS, n_estimators=5, contamination=0.1, seed=0
        )
    frame.loc[[3, 7], "humidity"] = [np.nan, np.inf]
    with pytest.raises(ValueError, match="2 rows with missing or non-finite"):
        train_isolation_forest(frame, SENSORS, n_estimators=5, contamination=0.1, seed=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        train_isolation_forest(frame.iloc[:1], SENSORS, n_estimators=5, contamination=0.1, seed=0)


def test_model_and_sensor_list_must_agree() -> None:
    model = train()
    with pytest.raises(ValueError, match="fitted on 3 features, but 2 sensors"):
        SklearnModel(model.pipeline, INFO, SENSORS[:2], model.reference)
