"""`faultline batch global-anomalies`, and the Airflow DAG that runs it in production."""

from __future__ import annotations

import argparse
import ast
import json
import shlex
from pathlib import Path

import pytest

from faultline.batch import global_anomalies as job_module
from faultline.batch.cli import add_batch_parser
from faultline.clock import datetime_to_ms, iso_ms
from faultline.config import load_settings
from faultline.store import GlobalAnomalies, GlobalAnomalyRuns, open_store
from tests.batch.readings import DAY, readings_of
from tests.contract.batches import write_batch

DAG = Path(__file__).parents[2] / "deploy" / "airflow" / "global_anomalies_dag.py"


def parser() -> argparse.ArgumentParser:
    """The main CLI's shape: `faultline COMMAND` with the common --config/--data-dir flags."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path)
    common.add_argument("--data-dir", type=Path)
    main = argparse.ArgumentParser(prog="faultline")
    add_batch_parser(main.add_subparsers(dest="command", required=True), parents=[common])
    return main


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.handler(args))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = open_store(load_settings(data_dir=tmp_path).store_url)
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=12, jumps={("humidity", 90): -12.0})))
    store.close()
    return tmp_path


def test_the_command_finds_and_stores_a_days_anomalies(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["batch", "global-anomalies", "--day", "2026-03-14", "--data-dir", str(data_dir)])

    out = capsys.readouterr().out
    assert code == 0
    store = open_store(load_settings(data_dir=data_dir).store_url)
    found = store.query(GlobalAnomalies(DAY))
    (record,) = store.query(GlobalAnomalyRuns(DAY))
    store.close()
    head, when, *rest = out.splitlines()
    assert head == (
        f"global anomalies of 2026-03-14: succeeded, {len(found)} anomalies in 3 series, 0 skipped"
    )
    assert when.startswith(f"  run from {iso_ms(datetime_to_ms(record.started_at))} to ")
    assert when.endswith(" s), recorded")
    assert "  s-1/humidity at 01:30 UTC: " in "\n".join(rest)
    assert ("humidity", "s-1") in {(a.sensor, a.station_id) for a in found}


def test_json_output_and_job_options(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["batch", "global-anomalies", "--day", "2026-03-14", "--data-dir", str(data_dir)]

    assert run([*argv, "--json", "--period-minutes", "721"]) == 0

    report = json.loads(capsys.readouterr().out)
    record = report["run"]
    assert (record["day"], record["status"], record["series"], record["anomalies"]) == (
        "2026-03-14",
        "succeeded",
        0,
        0,
    )
    assert (record["skipped"], record["error"], report["not_recorded"]) == (
        {"too_short": 3},
        None,
        None,
    )
    assert record["started_at"].endswith("+00:00")
    assert record["finished_at"] >= record["started_at"]
    assert report["anomalies"] == []
    assert {s["reason"] for s in report["skipped"]} == {
        "its readings span 1440 minutes; S-H-ESD needs two seasonal periods (1442 minutes)"
    }
    assert len(report["skipped"]) == 3


def test_a_failed_run_exits_1_and_says_what_its_record_says(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise ValueError("S-H-ESD needs finite values: fill gaps first")

    monkeypatch.setattr(job_module, "seasonal_hybrid_esd", broken)
    argv = ["batch", "global-anomalies", "--day", "2026-03-14", "--data-dir", str(data_dir)]

    assert run(argv) == 1

    head, when = capsys.readouterr().out.splitlines()
    assert head == (
        "global anomalies of 2026-03-14: failed: ValueError: S-H-ESD needs finite values: fill "
        "gaps first; before that, 0 anomalies in 0 series, 0 skipped"
    )
    assert when.endswith(", recorded")
    store = open_store(load_settings(data_dir=data_dir).store_url)
    (record,) = store.query(GlobalAnomalyRuns(DAY))
    store.close()
    assert (record.status, record.error) == (
        "failed",
        "ValueError: S-H-ESD needs finite values: fill gaps first",
    )

    assert run([*argv, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["status"] == "failed" and report["run"]["error"] == record.error


@pytest.mark.parametrize("day", ["14.03.2026", "2026-02-30", "yesterday"])
def test_a_bad_day_is_refused_with_an_example(day: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["batch", "global-anomalies", "--day", day])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--day" in err and ("e.g. 2026-01-31" in err or "not a day of the calendar" in err)


def test_bad_job_options_are_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        run(["batch", "global-anomalies", "--data-dir", str(data_dir), "--alpha", "2"])


def dag_calls() -> dict[str, ast.Call]:
    tree = ast.parse(DAG.read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return {ast.unparse(call.func): call for call in calls}


def keyword(call: ast.Call, name: str) -> object:
    (value,) = [k.value for k in call.keywords if k.arg == name]
    return ast.literal_eval(value) if not isinstance(value, ast.Name) else value.id


def test_the_dag_runs_the_same_command_daily_after_midnight(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = dag_calls()
    dag, task = calls["DAG"], calls["BashOperator"]
    assert keyword(dag, "schedule") == "5 0 * * *"
    assert keyword(dag, "catchup") is True
    assert keyword(task, "bash_command") == "COMMAND"
    tree = ast.parse(DAG.read_text())
    (command,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMMAND"
    ]
    assert command == "faultline batch global-anomalies --day {{ ds }}"

    # Airflow renders {{ ds }} as the data interval's start day, YYYY-MM-DD.
    program, *argv = shlex.split(command.replace("{{ ds }}", DAY.isoformat()))
    assert program == "faultline"
    assert run([*argv, "--data-dir", str(data_dir)]) == 0
    assert "global anomalies of 2026-03-14" in capsys.readouterr().out
