"""`faultline up`'s runtime runs a notifier per configured receiver, and none without one."""

from __future__ import annotations

import time
from pathlib import Path

from faultline.config import load_settings
from faultline.notify import verify
from faultline.runtime import Runtime
from faultline.store import Checkpoints
from tests.notify.support import Sink, alarm, raised, record, serving


def test_the_runtime_delivers_to_each_configured_receiver(tmp_path: Path) -> None:
    with serving(Sink()) as sink:
        settings = load_settings(
            data_dir=tmp_path,
            notify={
                "receivers": [{"name": "ops", "kind": "webhook", "url": sink.url, "secret": "k"}],
                "poll_s": 0.05,
            },
        )
        runtime = Runtime(settings)
        try:
            runtime.start_notifier()
            assert list(runtime.supervisor.workers) == ["notify-ops"]
            # The notifier starts at the present: wait until it has saved that position.
            deadline = time.monotonic() + 30

            while not runtime.store.query(Checkpoints("notifier", "ops")):
                assert time.monotonic() < deadline, "the notifier did not start"
                time.sleep(0.02)
            now = int(time.time() * 1000)
            record(runtime.store, [raised(alarm(), now)], now)
            [request] = sink.wait_for(1)
        finally:
            runtime.shutdown(10)
    assert request.json()["key"] == raised(alarm(), now).key  # type: ignore[index]
    assert verify(b"k", request.headers["X-Faultline-Timestamp"], request.body,
                  request.headers["X-Faultline-Signature"], int(time.time() * 1000))  # fmt: skip


def test_no_receiver_no_notifier(tmp_path: Path) -> None:
    runtime = Runtime(load_settings(data_dir=tmp_path))
    try:
        runtime.start_notifier()
        assert runtime.supervisor.workers == {}
    finally:
        runtime.shutdown(5)
