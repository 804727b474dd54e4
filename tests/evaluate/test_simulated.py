"""`faultline eval simulate`: one run per fault kind, scored event-wise, through its parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faultline.detect.robust import RobustStreamingDetector
from faultline.evaluate.detectors import EvalDetector, eval_detector
from faultline.evaluate.simulated import SimulationSetup, run_simulation
from faultline.simulate import fault_kinds
from tests.evaluate.test_cli import run

SMALL = ["--stations", "6", "--hours", "0.5", "--faults-per-hour", "6"]


def test_every_kind_is_scored_and_dropouts_by_the_station_health_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "simulate", *SMALL, "--detector", "robust_z", "--out", str(tmp_path)]
    assert run([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "simulate.json").read_text()) == got
    assert list(got["kinds"]) == [k.value for k in fault_kinds(coupled=False)]
    for kind in got["kinds"].values():
        assert kind["events"] > 0
        assert kind["false_alarms"] == kind["alarms"] - kind["true_alarms"]
    # An 8-10 sigma reading is past robust_z's threshold of 6 every time, at once.
    spike = got["kinds"]["spike"]
    assert spike["recall"] == 1.0 and spike["delay_median"] == 0.0
    # Every dropout lasts at least 20 s, past the 10 s after which a station is silent, so the
    # health rule finds each one 9 readings after it began (10 s after the last reading);
    # only a silence still running when the readings end goes unseen.
    health = got["dropout_station_health"]
    assert health["precision"] == 1.0 and health["recall"] > 0.9
    assert health["delay_median"] == 9.0
    assert got["station_days"] == pytest.approx(7 * 6 * 0.5 / 24)
    assert got["false_alarms_per_station_day"] == got["false_alarms"] / got["station_days"]

    assert run(argv) == 0
    table = capsys.readouterr().out
    assert "dropout (station health)" in table and "per station-day" in table


def test_events_in_the_warm_up_are_left_out() -> None:
    # A 500-reading warm-up out of 900 leaves many faults before the first verdict.
    setup = SimulationSetup(stations=4, hours=0.25, faults_per_station_hour=20)
    quick = run_simulation(eval_detector("robust_z"), setup, kinds=["spike"]).kinds["spike"]
    slow_spec = EvalDetector(
        "robust_z", "", lambda sensors, _: RobustStreamingDetector(sensors, warmup=500)
    )
    slow = run_simulation(slow_spec, setup, kinds=["spike"]).kinds["spike"]
    assert quick.unscored < slow.unscored
    assert slow.score.events + slow.unscored == quick.score.events + quick.unscored


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hours", "0"], "hours"),
        (["--grace", "-1"], "grace"),
        (["--faults-per-hour", "0"], "faults_per_station_hour"),
    ],
)
def test_bad_settings_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(["eval", "simulate", *flags])
