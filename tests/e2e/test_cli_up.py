"""`faultline up` as a user runs it: a real process, a real port, Ctrl-C, and a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from faultline.store import Checkpoints, SqliteStore

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "FAULTLINE_MODEL__N_ESTIMATORS": "50",
        "FAULTLINE_MODEL__TRAIN_SAMPLES": "2000",
        "FAULTLINE_SIMULATE__RATE_HZ": "5",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faultline.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--stations",
            "4",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for_line(proc: subprocess.Popen[str], fragment: str, timeout_s: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if fragment in line:
            return lines
    proc.kill()
    raise AssertionError(f"never printed {fragment!r}; output:\n{''.join(lines)}")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def wait_for_stations(url: str, count: int, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    stations: list[dict] = []
    while time.monotonic() < deadline:
        stations = httpx.get(f"{url}/api/stations").json()["stations"]
        if len(stations) == count and all(s["readings"] > 0 for s in stations):
            return stations
        time.sleep(0.5)
    raise AssertionError(f"stations never appeared: {stations}")


def test_up_serves_the_dashboard_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(tmp_path, port)
    lines = wait_for_line(proc, "Faultline is running", timeout_s=120)
    assert any(f"{url}/" in line for line in lines)
    assert any("training one" in line for line in lines)
    assert "<title>" in httpx.get(f"{url}/").text
    assert httpx.get(f"{url}/api/health").status_code == 200
    first = {s["station_id"]: s["readings"] for s in wait_for_stations(url, 4)}
    assert "Faultline stopped." in stop(proc)
    store = SqliteStore(tmp_path / "faultline.db")
    (checkpoint,) = store.query(Checkpoints("faultline-engine", "faultline.readings"))
    store.close()
    assert checkpoint.offset >= sum(first.values())  # the clean stop checkpointed all it read

    proc = start(tmp_path, port)
    lines = wait_for_line(proc, "Faultline is running", timeout_s=120)
    text = "".join(lines)
    assert "training one" not in text  # the registered model is reused
    stations = httpx.get(f"{url}/api/stations").json()["stations"]
    resumed = {s["station_id"]: s["readings"] for s in stations}
    assert all(resumed[k] >= first[k] for k in first)  # stored data survived the restart
    # The default bus is a durable log on file: the engine resumes from its checkpoint (no
    # warm-up), and the readings published since are stored.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stations = httpx.get(f"{url}/api/stations").json()["stations"]
        if all(s["readings"] > resumed[s["station_id"]] for s in stations):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no new readings stored after the restart: {stations}")
    out = text + stop(proc)
    assert "partition 0: restored 4 stations" in out, out
