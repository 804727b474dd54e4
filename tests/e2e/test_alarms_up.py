"""Alarms in `faultline up` as a user runs it: a real process on a real port, readings posted
over HTTP, operators acknowledging with their tokens, `kill -9` and a restart on the same data.

The alarm settings are made quick through `FAULTLINE_*` variables (a short warm-up and on-delay,
silence after 3 s), and checkpoints are taken by message count only, so that what this test
posts after its second checkpoint is provably beyond it: the restart after `kill -9` must replay
those readings through the restored detector and alarm state, and the store must keep what it
already had (one raise per condition, the acknowledgement, the comment) and nothing twice.

Time is never asserted: every wait polls the API with a deadline.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faultline.store import Checkpoints, SqliteStore
from tests.faults.durability import SMALL_MODEL, Faultline
from tests.tokens import JSON, bearer

pytestmark = pytest.mark.slow

SILENT_AFTER_S = 3.0
TICK = 100  # readings that make the engine take a checkpoint (engine.checkpoint_max_messages)
QUICK_ALARMS = {
    **SMALL_MODEL,
    "FAULTLINE_ALARMS__WARMUP_READINGS": "60",
    "FAULTLINE_DETECT__CALIBRATING": "100",  # surprise may flag from its warm-up's end on
    "FAULTLINE_ALARMS__RULE__ON_DELAY_READINGS": "5",
    "FAULTLINE_ALARMS__RULE__SILENT_AFTER_S": str(SILENT_AFTER_S),
    # Checkpoints by count alone: the first batch's, then one per TICK readings.
    "FAULTLINE_ENGINE__CHECKPOINT_INTERVAL_S": "86400",
    "FAULTLINE_ENGINE__CHECKPOINT_MAX_MESSAGES": str(TICK),
}
WAIT_S = 90.0  # the first batch compiles the detector kernels: slow on a loaded machine
PRESS, QUIET, KEEP = "press-01", "quiet-01", "keep-01"
ANOMALY_ID = f"{PRESS}|temperature|anomaly"
QUIET_ID = f"{QUIET}|*|silent"
PRESS_SILENT_ID = f"{PRESS}|*|silent"
CALM, SHIFTED = 200, 60  # readings of the calm start, then of the level shift
SHIFT = 25.0  # °C on temperature: twelve of the sensor's standard deviations

T = TypeVar("T")


def poll(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """The first answer of `probe` that is not None, or fail saying what never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            found = probe()
            if found is not None:
                return found
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


class Plant:
    """What a user does: post readings with an ingest token, read and handle alarms."""

    def __init__(self, fl: Faultline) -> None:
        self.fl = fl
        self.client = httpx.Client(base_url=fl.url, timeout=10)
        self.rng = random.Random(7)
        self.base_ms = int(time.time() * 1000) - 400_000  # event times from 400 s ago
        self.seq: dict[str, int] = {}
        self.posted = 0

    def post(self, station: str, count: int, temperature_shift: float = 0.0) -> None:
        """`count` readings of `station` at 1 Hz of event time, continuing its last ones."""
        first = self.seq.get(station, 0)
        g = self.rng.gauss
        body = [
            {
                "station_id": station,
                "ts": self.base_ms + 1000 * n,
                "seq": n,
                "values": {
                    "temperature": round(25 + g(0, 2) + temperature_shift, 2),
                    "humidity": round(60 + g(0, 3), 2),
                    "noise_level": round(50 + g(0, 3), 2),
                },
            }
            for n in range(first, first + count)
        ]
        reply = self.client.post("/api/readings", json=body, headers=bearer(self.fl.token))
        assert reply.status_code == 202, reply.text
        self.seq[station] = first + count
        self.posted += count

    def stored(self, station: str) -> int:
        stations = self.client.get("/api/stations").json()["stations"]
        return next((s["readings"] for s in stations if s["station_id"] == station), 0)

    def wait_stored(self, station: str) -> None:
        want = self.seq[station]
        poll(f"{want} readings of {station} stored", lambda: self.stored(station) == want or None)

    def alarm(self, alarm_id: str) -> dict[str, Any] | None:
        reply = self.client.get(f"/api/alarms/{quote(alarm_id, safe='')}")
        return None if reply.status_code == 404 else reply.json()

    def wait_alarm(self, alarm_id: str, holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        seen: list[dict[str, Any] | None] = [None]

        def probe() -> dict[str, Any] | None:
            seen[0] = found = self.alarm(alarm_id)
            return found if found is not None and holds(found) else None

        try:
            return poll(f"alarm {alarm_id} as expected", probe)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {seen[0]}") from None

    def act(self, alarm_id: str, action: str, token: str, body: object = None) -> httpx.Response:
        return self.client.post(
            f"/api/alarms/{quote(alarm_id, safe='')}/{action}",
            json={} if body is None else body,
            headers={**JSON, **bearer(token)},
        )

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.client.get("/metrics").text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def actions(alarm: dict[str, Any]) -> list[str]:
    return [h["action"] for h in alarm["history"]]


def token_create(fl: Faultline, role: str, name: str) -> subprocess.Popen[str]:
    """`faultline token create` on the data dir, as an administrator would, started; the token
    is the last line it prints (`created_token`)."""
    cli = [sys.executable, "-m", "faultline.cli", "token", "create", "--data-dir", str(fl.data_dir)]
    return subprocess.Popen(
        [*cli, "--role", role, "--name", name], stdout=subprocess.PIPE, text=True, env=fl.env
    )


def created_token(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out.strip().splitlines()[-1]


@pytest.fixture
def faultline(tmp_path: Path) -> Iterator[Faultline]:
    fl = Faultline(tmp_path / "data", env=QUICK_ALARMS)
    try:
        yield fl
    finally:
        if fl.stop() != 0:
            print(fl.tail(80))


def test_alarms_are_raised_handled_by_operators_and_survive_kill_9(faultline: Faultline) -> None:
    fl = faultline
    # The tokens are made while Faultline starts: both take seconds of imports.
    making = [
        token_create(fl, "operator", "night-shift"),
        token_create(fl, "viewer", "wall-screen"),
    ]
    fl.start()
    operator, viewer = (created_token(proc) for proc in making)
    plant = Plant(fl)

    # A calm start for two stations; then both stop and fall silent.
    plant.post(PRESS, CALM)
    plant.post(QUIET, CALM)
    plant.wait_stored(QUIET)
    plant.wait_stored(PRESS)
    for alarm_id in (QUIET_ID, PRESS_SILENT_ID):
        silent = plant.wait_alarm(alarm_id, lambda a: a["active"])
        assert (silent["sensor"], silent["severity"], actions(silent)) == ("*", "high", ["raise"])
    assert plant.alarm(ANOMALY_ID) is None  # calm readings raise no anomaly alarm

    # Another station's readings make the engine take a checkpoint with both silences in it.
    plant.post(KEEP, TICK)
    plant.wait_stored(KEEP)

    # The press shifts its temperature by twelve standard deviations; the quiet station sends
    # again, which clears its silence; then it stops again, and a new silence begins.
    plant.post(PRESS, SHIFTED, temperature_shift=SHIFT)
    plant.post(QUIET, 10)
    anomaly = plant.wait_alarm(ANOMALY_ID, lambda a: a["active"])
    assert anomaly["station_id"] == PRESS and anomaly["sensor"] == "temperature"
    assert anomaly["sensors"][0]["sensor"] == "temperature"
    # Medium or worse: the shift passed the immediate severity instead of the on-delay.
    assert anomaly["severity"] in ("medium", "high", "critical")
    assert actions(anomaly) == ["raise"] and not anomaly["acknowledged"]
    listed = plant.client.get("/api/alarms", params={"state": "active"}).json()["alarms"]
    assert ANOMALY_ID in {a["id"] for a in listed}
    quiet = plant.wait_alarm(QUIET_ID, lambda a: actions(a) == ["raise", "clear", "raise"])
    assert quiet["active"] and quiet["history"][1]["activation_ms"] == quiet["history"][0]["at_ms"]
    plant.wait_alarm(PRESS_SILENT_ID, lambda a: actions(a) == ["raise", "clear", "raise"])

    # Acknowledging is an operator's: a viewer's and an ingest token are refused.
    for token, role in ((viewer, "viewer"), (fl.token, "ingest")):
        refused = plant.act(ANOMALY_ID, "ack", token)
        assert refused.status_code == 403, refused.text
        assert f"is {role}" in refused.json()["detail"]
    acked = plant.act(ANOMALY_ID, "ack", operator)
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged"] and acked.json()["acknowledgement"]["by"] == "night-shift"
    again = plant.act(ANOMALY_ID, "ack", operator)
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    noted = plant.act(ANOMALY_ID, "comment", operator, {"text": "cooling water valve stuck"})
    assert noted.status_code == 200, noted.text
    before = plant.alarm(ANOMALY_ID)
    assert before is not None and actions(before) == ["raise", "ack", "comment"]
    quiet_before = plant.alarm(QUIET_ID)
    press_silent_before = plant.alarm(PRESS_SILENT_ID)

    fl.kill()
    store = SqliteStore(fl.data_dir / "faultline.db")
    try:
        (checkpoint,) = store.query(Checkpoints("faultline-engine", "faultline.readings"))
    finally:
        store.close()
    # The shift and the quiet station's return lie beyond the last checkpoint: replayed below.
    assert checkpoint.offset == 2 * CALM + TICK < plant.posted

    fl.start()
    beyond = plant.posted - checkpoint.offset
    readings = ("faultline_readings_total", frozenset())
    poll(
        f"the {beyond} readings beyond the checkpoint replayed",
        lambda: plant.metrics().get(readings, 0) >= beyond or None,
    )
    after = plant.alarm(ANOMALY_ID)
    assert (
        after is not None and after == before
    )  # no second raise, the acknowledgement and comment kept as they were
    assert after["acknowledged"] and after["acknowledgement"]["by"] == "night-shift"
    assert [c["text"] for c in after["comments"]] == ["cooling water valve stuck"]
    assert plant.alarm(PRESS_SILENT_ID) == press_silent_before

    # The quiet station's return after the restart clears the silence that began before it.
    plant.post(QUIET, 10)
    assert quiet_before is not None
    latest = quiet_before["activated_at_ms"]
    quiet = plant.wait_alarm(
        QUIET_ID, lambda a: any(h["action"] == "clear" for h in a["history"][3:])
    )
    assert quiet["history"][:3] == quiet_before["history"]
    clear = quiet["history"][3]
    assert (clear["action"], clear["activation_ms"]) == ("clear", latest)
    keys = [h["key"] for h in quiet["history"]]
    assert len(keys) == len(set(keys))

    metrics = plant.metrics()
    silent_clears = (
        "faultline_alarm_transitions_total",
        frozenset({("kind", "silent"), ("action", "clear")}),
    )
    assert metrics.get(silent_clears, 0) >= 1  # counted by the restarted engine
    active = (
        "faultline_alarms_active",
        frozenset({("kind", "anomaly"), ("severity", after["severity"])}),
    )
    assert metrics[active] >= 1  # read from the store, which kept the alarm across the kill
