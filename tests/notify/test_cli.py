"""`faultline notify`, the notifier of the scale-out deployment, as a process: it delivers the
store's alarm transitions to its receivers, serves its metrics and stops on SIGTERM; with no
receiver configured it refuses to start, saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from faultline.notify import verify
from faultline.store import Checkpoints, SqliteStore
from tests.notify.support import Sink, alarm, free_port, raised, record, serving

SECRET = "cli-secret"


def notify_process(data_dir: Path, env: dict[str, str], metrics_port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faultline.cli",
            "notify",
            f"--data-dir={data_dir}",
            f"--metrics-port={metrics_port}",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_faultline_notify_delivers_the_stores_transitions_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    with serving(Sink()) as sink:
        receivers = [{"name": "ops", "kind": "webhook", "url": sink.url, "secret": SECRET}]
        env = {
            "FAULTLINE_NOTIFY__RECEIVERS": json.dumps(receivers),
            "FAULTLINE_NOTIFY__POLL_S": "0.1",
        }
        port = free_port()
        process = notify_process(tmp_path, env, port)
        store = SqliteStore(tmp_path / "faultline.db")
        try:
            # A receiver starts at the present: write once its position is in the store.
            deadline = time.monotonic() + 60
            while not store.query(Checkpoints("notifier", "ops")):
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the notifier never took its position"
                time.sleep(0.1)
            now = int(time.time() * 1000)
            record(store, [raised(alarm("cli-1"), now)], now)
            (request,) = sink.wait_for(1)
            assert verify(
                SECRET.encode(),
                request.headers["X-Faultline-Timestamp"],
                request.body,
                request.headers["X-Faultline-Signature"],
                int(time.time() * 1000),
            )
            assert json.loads(request.body)["alarm_id"] == "cli-1|temperature|anomaly"
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert 'faultline_notifications_delivered_total{receiver="ops"} 1.0' in metrics
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
            store.close()
    assert process.returncode == 0, out
    assert "notifying ops" in out


def test_faultline_notify_without_a_receiver_refuses_to_start(tmp_path: Path) -> None:
    process = notify_process(tmp_path, {}, free_port())
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "no receiver to deliver to: configure notify.receivers" in out
