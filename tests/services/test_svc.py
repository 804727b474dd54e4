"""scripts/services/svc.py itself: idempotent start, readiness, stop, and clear failures.

Each test runs its own service set in a temporary state directory with shifted ports, so it
neither touches nor collides with the servers `make test` started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.endpoints import SVC, missing

OFFSET = 700
MQTT_PORT = 11883 + OFFSET


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    outer = {k: v for k, v in os.environ.items() if not k.startswith("FAULTLINE_TEST_")}
    isolated = {
        **outer,
        "FAULTLINE_SERVICES_DIR": str(tmp_path / "services"),
        "FAULTLINE_SERVICES_PORT_OFFSET": str(OFFSET),
    }
    yield isolated
    run(isolated, "stop", "all")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SVC), *args], env=env, capture_output=True, text=True, timeout=120
    )


def require_mosquitto() -> None:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing("mosquitto not installed (scripts/services/svc.py install mosquitto)")


def test_start_is_idempotent_and_stop_stops(env: dict[str, str]) -> None:
    require_mosquitto()
    first = run(env, "start", "mosquitto")
    assert first.returncode == 0, first.stderr
    assert "mosquitto: ready" in first.stdout
    again = run(env, "start", "mosquitto")
    assert "already running" in again.stdout
    assert run(env, "status", "mosquitto").returncode == 0
    assert f"FAULTLINE_TEST_MQTT=127.0.0.1:{MQTT_PORT}" in run(env, "env", "mosquitto").stdout

    assert run(env, "stop", "mosquitto").returncode == 0
    status = run(env, "status", "mosquitto")
    assert status.returncode == 1
    assert "mosquitto: stopped" in status.stdout
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", MQTT_PORT), timeout=1).close()


def test_a_port_held_by_a_stranger_is_reported_not_shared(env: dict[str, str]) -> None:
    require_mosquitto()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", MQTT_PORT))
        squatter.listen()
        done = run(env, "start", "mosquitto")
    assert done.returncode == 1
    assert f"port {MQTT_PORT} is taken" in done.stderr


def test_a_server_that_dies_while_starting_fails_with_its_log(env: dict[str, str]) -> None:
    if shutil.which("java") is None and not os.environ.get("FAULTLINE_JAVA"):
        missing("no Java: Cassandra cannot run here")
    done = run({**env, "FAULTLINE_CASSANDRA_HEAP": "1x"}, "start", "cassandra")
    assert done.returncode == 1
    assert "exited before cassandra was ready" in done.stderr
    assert "Invalid initial heap size" in done.stderr  # the server's own words, from its log


def test_an_unknown_service_is_refused() -> None:
    done = run(dict(os.environ), "start", "kafak")
    assert done.returncode == 2
    assert "unknown service(s) kafak" in done.stderr


def test_run_hands_the_command_the_addresses_and_stops_after(env: dict[str, str]) -> None:
    require_mosquitto()
    show = "import os; print('GOT', os.environ['FAULTLINE_TEST_MQTT'])"
    done = run(env, "run", "mosquitto", "--", sys.executable, "-c", show)
    assert done.returncode == 0, done.stderr
    assert f"GOT 127.0.0.1:{MQTT_PORT}" in done.stdout
    assert "mosquitto: stopped" in run(env, "status", "mosquitto").stdout


def test_run_leaves_out_a_broken_service_except_in_ci(env: dict[str, str]) -> None:
    if shutil.which("java") is None and not os.environ.get("FAULTLINE_JAVA"):
        missing("no Java: Cassandra cannot run here")
    broken = {**env, "FAULTLINE_CASSANDRA_HEAP": "1x", "CI": "false"}
    show = "import os; print('GOT', os.environ.get('FAULTLINE_TEST_CASSANDRA'))"
    laptop = run(broken, "run", "cassandra", "--", sys.executable, "-c", show)
    assert laptop.returncode == 0
    assert "GOT None" in laptop.stdout
    assert "cassandra: NOT READY" in laptop.stdout

    ci = run({**broken, "CI": "true"}, "run", "cassandra", "--", sys.executable, "-c", show)
    assert ci.returncode == 1
    assert "GOT" not in ci.stdout
    assert "exited before cassandra was ready" in ci.stderr
