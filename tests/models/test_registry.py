"""The registry against a real MLflow store (SQLite + local artifacts) in a temporary directory."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from faultline.models.compiled import CompiledForest, compile_forest
from faultline.models.isolation_forest import train_isolation_forest
from faultline.models.registry import MlflowModelRegistry, ModelNotFoundError
from tests.models.conftest import SENSORS, normal_readings

NAME = "faultline-isolation-forest"
PARAMS = {"n_estimators": 30, "contamination": 0.01, "seed": 0}


def open_registry(data_dir: Path, alias: str = "champion") -> MlflowModelRegistry:
    return MlflowModelRegistry(
        f"sqlite:///{data_dir / 'mlflow.db'}", data_dir / "mlartifacts", NAME, alias
    )


def trained(seed: int = 0) -> tuple[Pipeline, pd.DataFrame]:
    frame = normal_readings(1500, seed=seed)
    pipeline = train_isolation_forest(
        frame, SENSORS, n_estimators=30, contamination=0.01, seed=seed
    )
    return pipeline, frame.iloc[:400]


class Untrusted(TransformerMixin, BaseEstimator):
    """A step MLflow's safe (skops) format will not save: makes `register` fail half-way."""

    def fit(self, x: np.ndarray, y: object = None) -> Untrusted:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def registered(data_dir: Path) -> tuple[MlflowModelRegistry, Pipeline, pd.DataFrame]:
    registry = open_registry(data_dir)
    pipeline, reference = trained()
    registry.register(pipeline, SENSORS, reference, PARAMS)
    return registry, pipeline, reference


def test_a_registered_model_loads_by_alias_and_scores_identically(
    registered: tuple[MlflowModelRegistry, Pipeline, pd.DataFrame], data_dir: Path
) -> None:
    _, pipeline, reference = registered
    restarted = open_registry(data_dir)  # a new process would start from the store alone
    model = restarted.load()
    assert model.info.name == NAME
    assert model.info.alias == "champion"
    assert model.sensors == SENSORS
    expected_params = {k: str(v) for k, v in PARAMS.items()}
    assert model.info.params == {**expected_params, "sensors": ",".join(SENSORS)}
    x = normal_readings(2000, seed=9, shift={"humidity": 2.0}).to_numpy()
    np.testing.assert_array_equal(model.anomaly_score(x), -pipeline.score_samples(x))
    np.testing.assert_array_equal(model.is_anomaly(x), pipeline.predict(x) == -1)
    pd.testing.assert_frame_equal(model.reference, reference.reset_index(drop=True))
    assert (data_dir / "mlflow.db").is_file()
    run_dir = data_dir / "mlartifacts" / model.info.run_id / "artifacts"
    assert (run_dir / "reference.csv").is_file()
    assert (run_dir / "model" / "MLmodel").is_file()
    client = MlflowClient(restarted.tracking_uri)
    run = client.get_run(model.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["reference_rows"] == 400
    assert run.data.metrics["anomaly_threshold"] == pytest.approx(model.anomaly_threshold)


def test_current_is_cached_until_the_alias_moves(
    registered: tuple[MlflowModelRegistry, Pipeline, pd.DataFrame], data_dir: Path
) -> None:
    champion = registered[0].current().info
    registry = open_registry(data_dir, alias="staging")  # leaves the champion where it is
    staged, staged_reference = trained(seed=3)
    registry.register(staged, SENSORS, staged_reference, PARAMS)
    first = registry.current()
    assert registry.current() is first
    pipeline, reference = trained(seed=1)
    info = registry.register(pipeline, SENSORS, reference, {**PARAMS, "seed": 1})
    assert int(info.version) == int(first.info.version) + 1
    second = registry.current()
    assert second is not first
    assert second.info == info
    assert registry.current() is second
    x = normal_readings(100, seed=10).to_numpy()
    np.testing.assert_array_equal(second.anomaly_score(x), -pipeline.score_samples(x))
    assert registry.load().info == info
    assert registered[0].current().info == champion


def test_an_unknown_alias_is_not_found(
    registered: tuple[MlflowModelRegistry, Pipeline, pd.DataFrame], data_dir: Path
) -> None:
    registry, _, _ = registered
    assert registry.has_champion()
    with pytest.raises(ModelNotFoundError, match="alias 'challenger'"):
        registry.load("challenger")
    assert not open_registry(data_dir, alias="challenger").has_champion()


def test_a_failed_registration_changes_nothing(
    registered: tuple[MlflowModelRegistry, Pipeline, pd.DataFrame],
) -> None:
    registry, _, _ = registered
    before = registry.current().info
    pipeline, reference = trained(seed=2)
    broken = Pipeline([("untrusted", Untrusted()), *pipeline.steps]).fit(reference.to_numpy())
    with pytest.raises(MlflowException, match="untrusted types"):
        registry.register(broken, SENSORS, reference, PARAMS)
    assert registry.current().info == before
    client = MlflowClient(registry.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("faultline").experiment_id],
        filter_string="attributes.status = 'FAILED'",
    )
    assert len(runs) == 1
    with pytest.raises(ValueError, match="lacks sensor columns"):
        registry.register(pipeline, SENSORS, reference.drop(columns="humidity"), PARAMS)
    assert registry.current().info == before


def test_ensure_champion_trains_once_even_when_processes_start_together(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    def train() -> tuple[Pipeline, pd.DataFrame]:
        calls.append(1)
        return trained()

    assert not open_registry(tmp_path).has_champion()
    with pytest.raises(ModelNotFoundError):
        open_registry(tmp_path).current()
    results = []

    def start() -> None:  # each "process" opens its own registry over the same store
        results.append(open_registry(tmp_path).ensure_champion(train, SENSORS, PARAMS))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results[0] == results[1]
    again = open_registry(tmp_path).ensure_champion(train, SENSORS, PARAMS)
    assert len(calls) == 1
    assert again == results[0]
    assert again.version == "1"


def test_a_registered_model_scores_with_its_checked_compiled_form(
    registered: tuple[MlflowModelRegistry, Pipeline, pd.DataFrame], data_dir: Path
) -> None:
    _, pipeline, _ = registered
    model = open_registry(data_dir).load()
    assert model.scorer == "compiled"
    run = MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}").get_run(model.info.run_id)
    assert run.data.tags["compiled_form"] == "logged"
    assert run.data.metrics["compiled_check_rows"] == 800
    run_dir = data_dir / "mlartifacts" / model.info.run_id / "artifacts"
    assert (run_dir / "compiled" / "forest.npz").is_file()
    x = normal_readings(3000, seed=11, shift={"temperature": 3.0}).to_numpy()
    np.testing.assert_array_equal(model.anomaly_score(x), -pipeline.score_samples(x))
    np.testing.assert_array_equal(model.is_anomaly(x), pipeline.predict(x) == -1)
    np.testing.assert_array_equal(model.sklearn_score(x), model.anomaly_score(x))


def test_the_input_schema_names_the_sensors(
    registered: tuple[MlflowModelRegistry, Pipeline, pd.DataFrame], data_dir: Path
) -> None:
    from mlflow.models import Model

    info = registered[0].load().info
    mlmodel = Model.load(data_dir / "mlartifacts" / info.run_id / "artifacts" / "model")
    assert mlmodel.signature is not None
    assert mlmodel.signature.inputs.input_names() == list(SENSORS)
    assert mlmodel.signature.outputs.input_names() == ["anomaly_score"]


def test_a_compiled_form_that_disagrees_is_not_registered(tmp_path: Path) -> None:
    def off_by_a_hair(pipeline: Pipeline) -> CompiledForest:
        compiled = compile_forest(pipeline)
        return replace(compiled, value=compiled.value * (1 + 1e-12))

    registry = MlflowModelRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "art", NAME, "champion", off_by_a_hair
    )
    pipeline, reference = trained(seed=5)
    info = registry.register(pipeline, SENSORS, reference, PARAMS)
    model = registry.current()
    assert model.info == info
    assert model.scorer == "scikit-learn"
    tag = MlflowClient(registry.tracking_uri).get_run(info.run_id).data.tags["compiled_form"]
    assert tag.startswith("refused: compiled form scores ")
    assert not (tmp_path / "art" / info.run_id / "artifacts" / "compiled").exists()
    x = normal_readings(200, seed=12).to_numpy()
    np.testing.assert_array_equal(model.anomaly_score(x), -pipeline.score_samples(x))


def test_a_pipeline_that_cannot_be_compiled_is_registered_without_one(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    pipeline, reference = trained(seed=6)
    passthrough = Pipeline([("untrusted_free", "passthrough"), *pipeline.steps])
    info = registry.register(passthrough, SENSORS, reference, PARAMS)
    assert registry.current().scorer == "scikit-learn"
    tag = MlflowClient(registry.tracking_uri).get_run(info.run_id).data.tags["compiled_form"]
    assert tag.startswith("refused: only a StandardScaler + IsolationForest pipeline")


def test_registering_under_another_alias_leaves_the_champion(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    pipeline, reference = trained(seed=7)
    champion = registry.register(pipeline, SENSORS, reference, PARAMS)
    pipeline, reference = trained(seed=8)
    challenger = registry.register(
        pipeline, SENSORS, reference, PARAMS, alias="challenger", metrics={"train_rows": 1500}
    )
    assert challenger.alias == "challenger"
    assert int(challenger.version) == int(champion.version) + 1
    assert registry.current().info == champion
    assert registry.load("challenger").info == challenger
    run = MlflowClient(registry.tracking_uri).get_run(challenger.run_id)
    assert run.data.metrics["train_rows"] == 1500


def test_point_moves_an_alias_to_a_registered_version(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    pipeline, reference = trained(0)
    first = registry.register(pipeline, SENSORS, reference, PARAMS)
    pipeline, reference = trained(1)
    second = registry.register(pipeline, SENSORS, reference, PARAMS, alias="challenger")
    assert registry.version_of() == first.version
    assert registry.version_of("challenger") == second.version
    assert registry.version_of("nobody") is None

    moved = registry.point("champion", second.version)
    assert (moved.version, moved.alias) == (second.version, "champion")
    assert registry.current().info.version == second.version
    assert registry.load_version(first.version).info.run_id == first.run_id
    with pytest.raises(ModelNotFoundError, match="no version '99'"):
        registry.point("champion", "99")
    with pytest.raises(ModelNotFoundError, match="no version '99'"):
        registry.load_version("99")
    assert registry.version_of() == second.version
