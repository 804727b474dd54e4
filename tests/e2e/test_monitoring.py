"""A real Prometheus scraping a running `faultline up`, with the shipped alert rules: every
PromQL expression of the rules and of the Grafana dashboards is a valid query, each one over
metrics this process exports returns series, and bad input fires the dead-letter alert.

Which expressions must return series: those over `faultline_*` metrics and `up`. The Kafka,
Cassandra and JVM panels read JMX exporters this test does not run, and the consumer lag only
the Spark engine exports (tests/spark/test_spark_metrics.py checks it): for those a valid,
error-free answer is what can be checked here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml

from tests.notify.support import Sink, serving
from tests.services.endpoints import REPO
from tests.services.prometheus import Prometheus, free_port, running_prometheus
from tests.tokens import bearer, ingest_token_in

pytestmark = pytest.mark.slow

DEPLOY = REPO / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
NOT_EXPORTED_HERE = re.compile(r"\b(?:kafka|cassandra|jvm)_\w+|\bfaultline_consumer_lag\b")
SELECTOR = re.compile(r"\b(?:faultline_\w+|up)\b(?:\{[^}]*\})?")


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text())["panels"])
    return found


def rule_expressions() -> list[tuple[str, str]]:
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def reading(station: str, seq: int, temperature: float, now_ms: int) -> dict:
    return {
        "station_id": station,
        "ts": now_ms - (120 - seq) * 1000,
        "seq": seq,
        "values": {"temperature": temperature, "humidity": 60.0 + seq % 3, "noise_level": 50.0},
    }


def post_readings(url: str, token: str) -> int:
    """Three stations' 120 readings, each ending in a spike, and 80 bad messages (range and
    unknown sensor): over 5 % of the messages dead-lettered. Returns the good readings."""
    now_ms = int(time.time() * 1000)
    good = [
        reading(station, seq, 150.0 if seq >= 115 else 25.0 + (seq % 5) * 0.3, now_ms)
        for station in ("s1", "s2", "s3")
        for seq in range(120)
    ]
    bad = [reading("s4", seq, 999.0, now_ms) for seq in range(60)]
    bad += [{"station_id": "s5", "values": {"pressure": 1.0}} for _ in range(20)]
    for body in (good, bad):
        assert (
            httpx.post(f"{url}/api/readings", json=body, headers=bearer(token)).status_code == 202
        )
    return len(good)


def test_prometheus_answers_every_rule_and_panel_query_over_a_running_faultline(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        run_and_check(tmp_path, stack)


def run_and_check(tmp_path: Path, stack: ExitStack) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hook = stack.enter_context(serving(Sink()))  # a webhook receiver: the notifier's metrics
    receivers = [{"name": "ops", "kind": "webhook", "url": hook.url, "secret": "s3cret"}]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FAULTLINE_")},
        "FAULTLINE_MODEL__N_ESTIMATORS": "50",
        "FAULTLINE_MODEL__TRAIN_SAMPLES": "2000",
        # 120 readings a station, ending in a spike: a warm-up and calibrating stage that short.
        "FAULTLINE_DETECT__WARMUP": "30",
        "FAULTLINE_DETECT__CALIBRATING": "30",
        "FAULTLINE_NOTIFY__RECEIVERS": json.dumps(receivers),
    }
    token = ingest_token_in(tmp_path / "data")
    log = (tmp_path / "faultline.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultline.cli", "up", "--data-dir", str(tmp_path / "data"),
         "--port", str(port), "--no-simulator"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        eventually(lambda: _answers(proc, url), f"faultline up on {url}", timeout_s=180)
        with running_prometheus(
            tmp_path / "prometheus", {"faultline-api": f"127.0.0.1:{port}"}, RULE_FILES
        ) as prometheus:
            eventually(lambda: bool(prometheus.series('up{job="faultline-api"} == 1')),
                       "the first scrape")  # fmt: skip
            readings = post_readings(url, token)
            eventually(
                lambda: _value(prometheus, "sum(faultline_readings_total)") == readings,
                f"{readings} readings scraped",
            )
            check_dashboards(prometheus)
            check_rules(prometheus)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _answers(proc: subprocess.Popen[bytes], url: str) -> bool:
    assert proc.poll() is None, "faultline up exited: see faultline.log in the test's tmp_path"
    try:
        return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _value(prometheus: Prometheus, expr: str) -> float | None:
    series = prometheus.series(expr)
    return float(series[0]["value"][1]) if series else None


def check_dashboards(prometheus: Prometheus) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) > 20
    for title, expr in expressions:
        if NOT_EXPORTED_HERE.search(expr):
            prometheus.series(expr)  # a valid query, answered without an error
        else:
            eventually(lambda e=expr: bool(prometheus.series(e)),  # type: ignore[misc]
                       f"panel {title!r}: {expr} to return series", timeout_s=30)  # fmt: skip
    # The counts behind the panels are the ones the input made.
    kinds = {s["metric"]["kind"] for s in prometheus.series("faultline_dead_letters_total > 0")}
    assert kinds == {"range", "sensor"}
    assert _value(prometheus, 'sum(faultline_anomalies_total{sensor="temperature"})')


def check_rules(prometheus: Prometheus) -> None:
    for name, expr in rule_expressions():
        prometheus.series(expr)
        for selector in SELECTOR.findall(expr):
            if not NOT_EXPORTED_HERE.search(selector):
                assert prometheus.series(selector), f"{name}: {selector} has no series"
    shipped = {name for name, _ in rule_expressions()}

    def evaluated() -> bool:
        rules = {r["name"]: r for r in prometheus.rules()}
        assert set(rules) == shipped
        for rule in rules.values():
            assert rule["health"] != "err", f"{rule['name']}: {rule.get('lastError')}"
        return all(r["health"] == "ok" for r in rules.values())

    eventually(evaluated, "every rule evaluated")
    # 80 of 440 messages dead-lettered; nothing else is wrong.
    eventually(
        lambda: (
            {a["labels"]["alertname"] for a in prometheus.alerts()} == {"FaultlineDeadLetterRate"}
        ),
        f"only the dead-letter alert pending (got {prometheus.alerts()})",
        timeout_s=30,
    )
