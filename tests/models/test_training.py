"""Training on stored readings, against a real SQLite store filled by `store.write`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from faultline.cli import main
from faultline.config import Settings, load_settings
from faultline.models.isolation_forest import train_isolation_forest
from faultline.models.registry import MlflowModelRegistry
from faultline.models.training import stored_training_set, train_on_store
from faultline.schema import FaultLabel
from faultline.store import SqliteStore
from tests.contract.batches import SENSORS, T0, reading_frame, write_batch
from tests.models.conftest import normal_readings

N = 600  # readings per station, one a second from T0
FAULTY = ("line_a-1", 100_000, 129_000)  # a labelled fault: 30 readings, ts 100..129 s
END = T0 + N * 1000


def fill(path: Path) -> SqliteStore:
    """Three stations of normal readings; some flagged, one fault labelled, one reading partial.

    Every left-out reading carries an absurd temperature, so a model or reference sample that
    saw one would show it.
    """
    store = SqliteStore(path)
    for k, station in enumerate(("line_a-1", "line_a-2", "line_b-1")):
        values = normal_readings(N, seed=k).to_numpy(copy=True)
        anomalous = np.zeros(N, bool)
        anomalous[::50] = True  # 12 a station
        ts = T0 + np.arange(N) * 1000
        if station == FAULTY[0]:
            values[(ts >= T0 + FAULTY[1]) & (ts <= T0 + FAULTY[2]), 0] = 150.0
        values[anomalous, 0] = 150.0
        if station == "line_a-2":
            values[7, 1] = np.nan  # a reading without humidity
        store.write(write_batch(reading_frame(station, ts, values=values, is_anomaly=anomalous)))
    store.write(
        write_batch(
            faults=[FaultLabel(FAULTY[0], "temperature", "spike", T0 + FAULTY[1], T0 + FAULTY[2])]
        )
    )
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SqliteStore:
    return fill(tmp_path_factory.mktemp("store") / "faultline.db")


def settings(data_dir: Path) -> Settings:
    return load_settings(
        data_dir=data_dir,
        model={"n_estimators": 25, "train_samples": 1000, "seed": 3, "contamination": 0.01},
    )


def registry(s: Settings) -> MlflowModelRegistry:
    return MlflowModelRegistry(
        s.mlflow_uri, s.data_dir / "mlartifacts", s.model.name, s.model.alias
    )


def test_the_training_set_leaves_out_anomalies_faults_and_partial_readings(
    store: SqliteStore,
) -> None:
    data = stored_training_set(store, SENSORS, T0, END, page=128)  # several pages a station
    assert data.stations == ("line_a-1", "line_a-2", "line_b-1")
    # 12 flagged a station; the fault's 30 readings include 1 flagged (ts 100 s); 1 partial.
    assert (data.readings, data.anomalous, data.in_faults, data.incomplete) == (1800, 36, 29, 1)
    assert len(data.frame) == 1800 - 36 - 29 - 1
    assert data.frame["temperature"].max() < 100
    assert list(data.frame.columns) == ["station_id", "ts", *SENSORS]
    assert data.frame["ts"].between(T0, END - 1).all()


def test_the_window_and_the_glob_choose_the_readings(store: SqliteStore) -> None:
    data = stored_training_set(store, SENSORS, T0 + 100_000, T0 + 200_000, "line_a-*")
    assert data.stations == ("line_a-1", "line_a-2")
    assert data.readings == 200  # ts 100..199 s of each, the end excluded
    assert sorted(set(data.frame["station_id"])) == ["line_a-1", "line_a-2"]
    faulty = data.frame[data.frame["station_id"] == "line_a-1"]
    assert faulty["ts"].min() == T0 + 130_000  # the labelled fault ends at 129 s
    nothing = stored_training_set(store, SENSORS, T0, END, "line_c-*")
    assert (nothing.stations, nothing.readings, len(nothing.frame)) == ((), 0, 0)
    with pytest.raises(ValueError, match="must end after it starts"):
        stored_training_set(store, SENSORS, END, T0)


def test_a_model_trained_on_the_store_is_registered_as_the_challenger(
    store: SqliteStore, tmp_path: Path
) -> None:
    s = settings(tmp_path)
    reg = registry(s)
    simulated = normal_readings(500, seed=9)
    pipeline = train_isolation_forest(
        simulated, SENSORS, n_estimators=10, contamination=0.01, seed=0
    )
    champion = reg.register(pipeline, SENSORS, simulated, {"training_data": "simulated"})
    info = train_on_store(s, store, reg, T0, END, "line_*")
    assert info.alias == "challenger"
    assert reg.current().info == champion  # the champion still serves
    challenger = reg.load("challenger")
    assert challenger.info == info
    assert challenger.scorer == "compiled"
    assert len(challenger.reference) == 1000  # train_samples rows drawn from 1734 clean ones
    assert challenger.reference["temperature"].max() < 100
    assert challenger.is_anomaly(np.array([[150.0, 90.0, 120.0]])).all()
    run = MlflowClient(s.mlflow_uri).get_run(info.run_id)
    assert run.data.params["train_from"] == "2026-01-01T00:00:00Z"
    assert run.data.params["train_to"] == "2026-01-01T00:10:00Z"
    assert run.data.params["train_stations"] == "line_*"
    assert run.data.params["n_estimators"] == "25"
    metrics = run.data.metrics
    assert metrics["window_readings"] == 1800
    assert metrics["excluded_anomalous"] == 36
    assert metrics["excluded_in_faults"] == 29
    assert metrics["excluded_incomplete"] == 1
    assert metrics["clean_readings"] == 1734
    assert metrics["training_rows"] == 1000
    assert metrics["stations"] == 3
    second = train_on_store(s, store, reg, T0, END, "line_b-*")
    assert int(second.version) == int(info.version) + 1
    assert reg.load("challenger").info == second


def test_too_few_clean_readings_is_refused_and_registers_nothing(
    store: SqliteStore, tmp_path: Path
) -> None:
    s = settings(tmp_path)
    with pytest.raises(ValueError, match="too little to train on: 20 clean readings of 1 stations"):
        train_on_store(s, store, registry(s), T0 + 100_000, T0 + 150_000, "line_a-1")
    assert not MlflowClient(s.mlflow_uri).search_registered_models()


def test_the_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(tmp_path / "faultline.db").close()
    base = ["train", "--data-dir", str(tmp_path), "--n-estimators", "15"]
    # An empty plant: the first model comes from simulated data and serves at once.
    assert main(base) == 0
    assert "version 1" in capsys.readouterr().out
    assert main(base) == 2
    assert "already has @champion; train on the plant's stored readings" in capsys.readouterr().err
    window = ["--from", "2026-01-01", "--to", "2026-01-01T00:10:00+00:00"]
    assert main([*base, *window, "--stations", "line_a-?"]) == 0
    assert "version 2 (run " in capsys.readouterr().out
    reg = registry(load_settings(data_dir=tmp_path))
    assert reg.current().info.version == "1"
    challenger = reg.load("challenger")
    assert challenger.info.version == "2"
    assert challenger.info.params["train_stations"] == "line_a-?"
    assert main([*base, "--from", "2026-01-01"]) == 2
    assert "--from and --to go together" in capsys.readouterr().err
    assert main([*base, "--from", "2026-01-02", "--to", "2026-01-03"]) == 2
    assert "too little to train on: 0 clean readings of 3 stations" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--from", "yesterday", "--to", "2026-01-03"])
    assert "not an ISO-8601 date or time: 'yesterday'" in capsys.readouterr().err


def test_the_challenger_alias_cannot_be_the_serving_alias() -> None:
    with pytest.raises(ValueError, match="alias and challenger_alias are both 'champion'"):
        load_settings(model={"challenger_alias": "champion"})
