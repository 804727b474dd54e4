"""A 202 means safe: `faultline up` killed with SIGKILL right after answering still stores every
reading it acknowledged, once, and an Idempotency-Key retry after the restart stores nothing twice.

The finding: 5000 readings posted, 202, `kill -9` within 50 ms, and all 5000 were gone after the
restart, because the embedded bus was memory only. And the bus file is shared: `faultline
process` in one process stores what another published to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from faultline.bus import Record, SqliteBus, open_bus
from faultline.codec import encode_reading
from faultline.config import load_settings
from faultline.store import Stations, open_store
from tests.e2e.test_cli_up import free_port, wait_for_line
from tests.tokens import bearer, ingest_token_in

pytestmark = pytest.mark.slow

STATIONS = 5
BATCH = 500
BATCHES = 8  # 4000 readings in Faultline's form


ENV = {
    "FAULTLINE_MODEL__N_ESTIMATORS": "20",
    "FAULTLINE_MODEL__TRAIN_SAMPLES": "500",
    # Durability is the bus's and the store's business: the detector that needs no JIT
    # compilation keeps each start short.
    "FAULTLINE_DETECT__DETECTOR": "robust_z",
}


def start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, **ENV}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "faultline.cli", "up", "--no-simulator"),
            *(f"--port={port}", f"--data-dir={data_dir}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def stored_per_station(url: str) -> dict[str, int]:
    stations = httpx.get(f"{url}/api/stations", timeout=10).json()["stations"]
    return {s["station_id"]: s["readings"] for s in stations}


def test_acknowledged_readings_survive_kill_9_and_a_retry_stores_them_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = bearer(ingest_token_in(tmp_path))
    proc = start(tmp_path, port)
    try:
        wait_for_line(proc, "Faultline is running", timeout_s=120)
        now = int(time.time() * 1000)
        acknowledged: dict[str, int] = {}
        with httpx.Client(base_url=url, headers=auth, timeout=10) as client:
            # Seed 000's form (no ts, no seq): its identity comes from the bus, so a retry is
            # only recognised by its key, which must survive the kill too.
            seed_form = [{"station_id": "seed", "temperature": 25.0 + i} for i in range(50)]
            key = {"Idempotency-Key": "before-the-kill"}  # beside the client's token
            assert client.post("/api/readings", json=seed_form, headers=key).status_code == 202
            acknowledged["seed"] = len(seed_form)
            for b in range(BATCHES):
                body = [
                    {
                        "station_id": f"s{i % STATIONS}",
                        "ts": now - 60_000 + b * BATCH + i,
                        "seq": b * BATCH + i,
                        "values": {"temperature": 25.0, "humidity": 60.0},
                    }
                    for i in range(BATCH)
                ]
                if client.post("/api/readings", json=body).status_code == 202:
                    for reading in body:
                        station = str(reading["station_id"])
                        acknowledged[station] = acknowledged.get(station, 0) + 1
        proc.kill()  # SIGKILL at once: no shutdown, no drain, no flush
        proc.communicate(timeout=30)
        assert sum(acknowledged.values()) == 50 + BATCHES * BATCH

        proc = start(tmp_path, port)
        wait_for_line(proc, "Faultline is running", timeout_s=120)
        retry = httpx.post(
            f"{url}/api/readings", json=seed_form, headers={**auth, **key}, timeout=10
        )
        assert retry.status_code == 202 and retry.headers["idempotent-replayed"] == "true"
        deadline = time.monotonic() + 60
        while (stored := stored_per_station(url)) != acknowledged:
            assert time.monotonic() < deadline, f"stored {stored}, acknowledged {acknowledged}"
            time.sleep(0.25)
        time.sleep(1.0)  # nothing more arrives: each reading stored once, the retry not at all
        assert stored_per_station(url) == acknowledged
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_faultline_process_consumes_the_bus_file_another_process_publishes_to(
    tmp_path: Path,
) -> None:
    """`faultline process` and a producer in another process share the default SQLite bus."""
    settings = load_settings(data_dir=tmp_path)
    bus = open_bus(settings.bus_url)  # this process stands in for the MQTT bridge or the API
    now = int(time.time() * 1000)
    bus.publish(
        settings.readings_topic,
        [
            Record(encode_reading("p1", now - 1000 + i, i, {"temperature": 25.0}), b"p1")
            for i in range(300)
        ],
    )
    env = {**os.environ, **ENV, "FAULTLINE_ENGINE__METRICS_PORT": str(free_port())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultline.cli", "process", f"--data-dir={tmp_path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_for_line(proc, "engine consuming", timeout_s=120)
        store = open_store(settings.store_url)
        deadline = time.monotonic() + 60
        while not (stations := store.query(Stations())) or stations[0].readings < 300:
            assert time.monotonic() < deadline, f"stored {stations}"
            time.sleep(0.25)
        assert isinstance(bus, SqliteBus)
        assert bus.lag(settings.readings_topic, settings.engine.consumer_group) == 0
        store.close()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        bus.close()
