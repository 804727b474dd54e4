"""`faultline ingest mqtt` on the embedded default bus, in a process of its own: what it took
from the broker is in the SQLite bus file for another process's consumer, even after the
bridge is killed with SIGKILL. Needs FAULTLINE_TEST_MQTT."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from faultline.bus import Message, SqliteBus
from faultline.config import load_settings
from tests.ingest.conftest import Publisher


def test_a_killed_bridge_process_leaves_what_it_acknowledged_in_the_bus_file(
    tmp_path: Path, broker: str, prefix: str, publisher: Publisher
) -> None:
    settings = load_settings(data_dir=tmp_path)  # the default bus: sqlite:///DATA_DIR/bus.db
    bus = SqliteBus(tmp_path / "bus.db", poll_s=0.01)
    assert settings.bus_url == f"sqlite:///{bus.path}"
    consumer = bus.consumer(settings.readings_topic, "engine")  # the engine's process
    bridge = subprocess.Popen(
        [
            *(sys.executable, "-m", "faultline.cli", "ingest", "mqtt"),
            *(f"--data-dir={tmp_path}", f"--broker=mqtt://{broker}"),
            *(f"--topic={prefix}/+/readings", f"--client-id=bridge-{prefix}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    try:
        sent = {f"s-{i}".encode(): [b"%d:%d" % (i, n) for n in range(30)] for i in range(4)}
        got: list[Message] = []
        # The first message may reach the broker before the bridge has subscribed: resend the
        # first station's until the bridge forwards one, then send the rest once.
        deadline = time.monotonic() + 60
        while not got:
            assert time.monotonic() < deadline and bridge.poll() is None, "bridge never forwarded"
            publisher.send(f"{prefix}/s-0/readings", [b"hello"])
            got += consumer.consume(10, timeout_s=0.5)
        for station, payloads in sent.items():
            publisher.send(f"{prefix}/{station.decode()}/readings", payloads)
        while len(got) < 1 + 120 and time.monotonic() < deadline:
            got += consumer.consume(200, timeout_s=0.5)
        bridge.kill()  # acknowledged to the broker means published to the file: nothing to flush
        bridge.wait(30)
    finally:
        bridge.kill()
        bridge.communicate(timeout=30)
    expected = sorted(
        (station, payload) for station, payloads in sent.items() for payload in payloads
    )
    assert sorted((m.key, m.value) for m in got if m.value != b"hello") == expected
    consumer.close()
    bus.close()

    reopened = SqliteBus(tmp_path / "bus.db")  # nothing was acknowledged: all still on file
    after = reopened.consumer(settings.readings_topic, "after-the-kill")
    kept = after.consume(1000, timeout_s=0.5)
    assert sorted((m.key, m.value) for m in kept if m.value != b"hello") == expected
    reopened.close()
