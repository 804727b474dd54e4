"""The alert rules shipped in deploy/prometheus/rules/: promtool accepts them, its unit tests
(faultline-rules.test.yml) fire each alert on the series that should fire it and on no other,
and compose mounts them where prometheus.yml looks for them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath

import yaml

from tests.deploy.test_compose import DEPLOY, SERVICES, mounts
from tests.services.endpoints import missing

RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
UNIT_TESTS = Path(__file__).with_name("faultline-rules.test.yml")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        missing("promtool not installed (Debian package prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True)


def alerts(path: Path) -> set[str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_rules() -> None:
    assert RULES, "no rules shipped"
    checked = promtool("check", "rules", *map(str, RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_in_promtools_unit_tests_and_only_where_it_should() -> None:
    tested = promtool("test", "rules", str(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    spec = yaml.safe_load(UNIT_TESTS.read_text())
    assert [(UNIT_TESTS.parent / f).resolve() for f in spec["rule_files"]] == RULES
    fired = {
        case["alertname"]
        for test in spec["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == set().union(*map(alerts, RULES))


def test_compose_mounts_the_rules_where_the_config_finds_them() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    mounted = dict((target, source) for source, target in mounts(SERVICES["prometheus"]))
    config_dir = PurePosixPath(
        next(t for t, s in mounted.items() if s.endswith("prometheus.yml"))
    ).parent
    for pattern in config["rule_files"]:
        directory = str(config_dir / PurePosixPath(pattern).parent)
        assert directory in mounted, f"rule_files {pattern}: {directory} is not mounted"
        found = sorted((DEPLOY / mounted[directory]).glob(PurePosixPath(pattern).name))
        assert found == RULES
