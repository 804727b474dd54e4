"""`faultline eval nab` and `faultline eval csv` end to end, through their argument parsers."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faultline.evaluate.cli import add_eval_parser

PROFILES_JSON = {
    name: {"CostMatrix": {"tpWeight": 1.0, "fnWeight": fn, "fpWeight": fp, "tnWeight": 1.0}}
    for name, fp, fn in [
        ("standard", 0.11, 1.0),
        ("reward_low_FP_rate", 0.22, 1.0),
        ("reward_low_FN_rate", 0.11, 2.0),
    ]
}


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="faultline")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def stamps(n: int) -> list[str]:
    return [str(t) for t in pd.date_range("2024-01-01", periods=n, freq="5min")]


def tiny_corpus(root: Path) -> None:
    """Two 400-row series, each with a burst of spikes inside its one window; the window runs
    on long enough to hold the 60 readings the band filter remembers the burst for."""
    rng = np.random.default_rng(0)
    windows = {}
    for name, at in [("cat/a.csv", 200), ("cat/b.csv", 300)]:
        values = rng.normal(10, 1, 400)
        values[at : at + 6 : 2] += 15
        ts = stamps(400)
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": ts, "value": values}).to_csv(path, index=False)
        windows[name] = [[ts[at - 20] + ".000000", ts[at + 80] + ".000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text(json.dumps(PROFILES_JSON))


def test_eval_nab_prints_a_table_and_writes_nab_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_corpus(tmp_path / "nab")
    out = tmp_path / "out"
    argv = ["eval", "nab", "--data", str(tmp_path / "nab"), "--detector", "band_filter"]
    assert run([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "standard" in table and "reward_low_FN_rate" in table and "ARTime" in table
    frame = pd.read_csv(out / "cat" / "band_filter_a.csv")
    assert list(frame.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(frame) == 400 and frame["label"].sum() == 101
    assert frame["anomaly_score"].between(0, 1).all()
    assert (out / "cat" / "band_filter_b.png").stat().st_size > 1000
    summary = json.loads((out / "band_filter_summary.json").read_text())
    assert set(summary["profiles"]["standard"]["files"]) == {"cat/a.csv", "cat/b.csv"}

    assert run([*argv, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    # Both bursts are caught inside their windows, so every profile beats the null detector.
    assert all(v > 0 for v in scores.values())
    assert scores == summary["scores"]


def test_eval_nab_without_a_corpus_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a NAB corpus"):
        run(["eval", "nab", "--data", str(tmp_path)])


def test_eval_nab_on_the_real_corpus_as_json(
    nab_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["eval", "nab", "--data", str(nab_root), "--detector", "band_filter", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert list(scores) == ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
    # Seed 003's filter flags about a sixth of all rows: no threshold beats detecting nothing.
    assert scores == {"standard": 0.0, "reward_low_FP_rate": 0.0, "reward_low_FN_rate": 0.0}


def write_csv(path: Path, spikes: list[int], labelled: list[int], sep: str = ",") -> None:
    rng = np.random.default_rng(len(path.name))
    n = 300
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=n, freq="1s", tz="UTC").map(str),
            "temperature": rng.normal(25, 1, n),
            "vibration": rng.normal(0, 0.1, n),
            "machine": "m1",  # not numeric: not a feature
            "anomaly": 0,
        }
    )
    frame.loc[spikes, "temperature"] += 30
    frame.loc[labelled, "anomaly"] = 1
    frame.to_csv(path, index=False, sep=sep)


def test_eval_csv_pools_the_scored_rows_of_all_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # File a: spikes at 100 and 200, both labelled. File b: an unlabelled spike at 150 and a
    # labelled row 250 without one. After 50 training rows per file, 500 rows are scored:
    # tp 2, fp 1, fn 1, tn 496. Point and event F1 = 2/3, FAR = 1/497, MAR = 1/3.
    write_csv(tmp_path / "a.csv", spikes=[100, 200], labelled=[100, 200], sep=";")
    write_csv(tmp_path / "b.csv", spikes=[150], labelled=[250], sep=";")
    argv = [
        "eval",
        "csv",
        str(tmp_path / "a.csv"),
        str(tmp_path / "b.csv"),
        "--time-column",
        "time",
        "--label-column",
        "anomaly",
        "--sep",
        ";",
        "--train-rows",
        "50",
        "--detector",
        "robust_z",
    ]
    assert run([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    files = got.pop("files")
    expected = {
        "f1_point": 2 / 3,
        "f1_event": 2 / 3,
        "far": 1 / 497,
        "mar": 1 / 3,
        "detection_rate": 2 / 3,
    }
    assert got == pytest.approx(expected)
    # Per file: a finds both its spikes and flags nothing else; b flags one normal row and
    # misses its labelled one.
    assert files["a"] == pytest.approx(
        {"f1_point": 1.0, "f1_event": 1.0, "far": 0.0, "mar": 0.0, "detection_rate": 1.0}
    )
    assert files["b"] == pytest.approx(
        {"f1_point": 0.0, "f1_event": 0.0, "far": 1 / 249, "mar": 1.0, "detection_rate": 0.0}
    )
    assert run(argv) == 0
    table = capsys.readouterr().out
    assert "features temperature, vibration" in table
    assert "scored rows 500" in table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[3:6]}
    assert rows["a"] == ["0.0000", "1.0000", "1.0000", "1.0000"]
    assert rows["pooled"][:2] == [f"{1 / 497:.4f}", f"{2 / 3:.4f}"]


@pytest.mark.parametrize(
    ("choice", "features"),
    [
        (["--features", "vibration"], "features vibration;"),
        (["--ignore", "temperature"], "features vibration;"),
        (["--features", "temperature,vibration"], "features temperature, vibration;"),
    ],
)
def test_eval_csv_chooses_its_feature_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], choice: list[str], features: str
) -> None:
    # The spikes are in temperature: without it as a feature nothing is found.
    write_csv(tmp_path / "a.csv", spikes=[100, 200], labelled=[100, 200])
    argv = ["eval", "csv", str(tmp_path / "a.csv"), "--time-column", "time"]
    argv += ["--label-column", "anomaly", "--train-rows", "50", "--detector", "robust_z"]
    assert run([*argv, *choice]) == 0
    assert features in capsys.readouterr().out
    assert run([*argv, *choice, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["detection_rate"]
    assert found == (1.0 if "temperature" in features else 0.0)


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        (["--features", "pressure"], "no column 'pressure'"),
        (["--ignore", "pressure"], "no column 'pressure'"),
        (["--features", "machine"], "feature column 'machine' is not numeric"),
        (["--ignore", "temperature,vibration"], "no numeric feature columns"),
    ],
)
def test_eval_csv_refuses_feature_choices_it_cannot_keep(
    tmp_path: Path, choice: list[str], message: str
) -> None:
    write_csv(tmp_path / "a.csv", spikes=[], labelled=[])
    argv = ["eval", "csv", str(tmp_path / "a.csv"), "--time-column", "time"]
    with pytest.raises(ValueError, match=message):
        run([*argv, "--label-column", "anomaly", *choice])


def test_eval_csv_takes_features_or_ignore_not_both(tmp_path: Path) -> None:
    argv = ["eval", "csv", "x.csv", "--time-column", "t", "--label-column", "l"]
    with pytest.raises(SystemExit):
        run([*argv, "--features", "a", "--ignore", "b"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns="anomaly"), "no column 'anomaly'"),
        (lambda f: f.iloc[::-1], "not in time order"),
        (lambda f: f.assign(anomaly=2), "labels must be 0 or 1"),
        (lambda f: f.assign(anomaly="maybe"), "0/1 or true/false"),
        (lambda f: f.assign(time="yesterday"), "unreadable time value"),
        (lambda f: f[["time", "anomaly"]], "no numeric feature columns"),
    ],
)
def test_eval_csv_refuses_bad_files_clearly(
    tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    path = tmp_path / "bad.csv"
    write_csv(path, spikes=[], labelled=[])
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        run(["eval", "csv", str(path), "--time-column", "time", "--label-column", "anomaly"])


def test_eval_csv_needs_rows_left_after_training(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", spikes=[], labelled=[])
    argv = [
        "eval",
        "csv",
        str(tmp_path / "a.csv"),
        "--time-column",
        "time",
        "--label-column",
        "anomaly",
        "--detector",
        "robust_z",
    ]
    with pytest.raises(ValueError, match="no rows left"):
        run([*argv, "--train-rows", "300"])
    with pytest.raises(ValueError, match="--train-rows must be >= 0"):
        run([*argv, "--train-rows", "-1"])


def test_eval_csv_fits_the_isolation_forest_on_the_training_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path / "a.csv", spikes=[200], labelled=[200])
    argv = [
        "eval",
        "csv",
        str(tmp_path / "a.csv"),
        "--time-column",
        "time",
        "--label-column",
        "anomaly",
        "--detector",
        "isolation_forest",
        "--json",
    ]
    with pytest.raises(ValueError, match="needs training rows"):
        run(argv)
    assert run([*argv, "--train-rows", "150"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["mar"] == 0.0  # a 30-sigma reading is outside anything the forest saw
