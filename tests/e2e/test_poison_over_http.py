"""The findings that once stopped detection for good, sent over HTTP to a running engine.

Each payload used to kill the engine thread (OverflowError, RecursionError) while ingest went on
answering 202, so everything sent afterwards was lost. Now each is a dead letter with its reason,
the engine stays healthy, and a good reading sent after them is stored and scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultline.api.app import create_app
from faultline.api.server import ApiServer
from faultline.config import load_settings
from faultline.runtime import Runtime
from faultline.store import DeadLetters, StationReadings
from faultline.store.base import LAST_MS
from tests.fuzz import FINDINGS, PROPERTIES
from tests.tokens import JSON, admin_token, bearer


def eventually(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, httpx.Client]]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("poison"),
        bus_url="memory://",
        model={"n_estimators": 20, "train_samples": 500},
        engine={"batch_max_wait_s": 0.05},
    )
    runtime = Runtime(settings)
    runtime.load_model()
    runtime.start_engine()
    ctx = runtime.app_context()
    headers = bearer(admin_token(ctx.tokens))
    with (
        ApiServer(create_app(ctx), port=0) as server,
        httpx.Client(base_url=server.url, headers=headers) as client,
    ):
        yield runtime, client
    runtime.shutdown()


@pytest.mark.parametrize("payload", FINDINGS, ids=range(len(FINDINGS)))
def test_a_poison_reading_is_a_dead_letter_and_detection_goes_on(
    running: tuple[Runtime, httpx.Client], payload: bytes
) -> None:
    runtime, client = running
    seq = FINDINGS.index(payload)
    good = {"station_id": "after", "ts": int(time.time() * 1000), "seq": seq, "temperature": 21}
    letters_before = len(runtime.store.query(DeadLetters(limit=1000)))

    posted = client.post("/api/readings", content=payload, headers=JSON)
    assert posted.status_code == 202, posted.text
    assert client.post("/api/readings", json=good).status_code == 202

    def stored() -> bool:
        page = runtime.store.query(StationReadings("after", 0, LAST_MS, limit=100))
        return seq in [r.seq for r in page.rows]

    eventually(stored)
    letters = runtime.store.query(DeadLetters(limit=1000))
    assert len(letters) == letters_before + 1
    assert letters[0].reason and letters[0].kind in {"time", "field", "malformed", "range"}
    health = client.get("/api/health")
    assert health.status_code == 200, health.text
    assert runtime.supervisor.workers["engine"].restarts == 0


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.one_of(*(make() for make in PROPERTIES.values())))
def test_any_body_is_answered_without_a_server_error(
    running: tuple[Runtime, httpx.Client], payload: bytes
) -> None:
    runtime, client = running
    for body in (payload, b"[" + payload + b", " + payload + b"]"):
        answer = client.post("/api/readings", content=body, headers=JSON)
        assert answer.status_code in (202, 400, 413), answer.text
    assert runtime.supervisor.workers["engine"].restarts == 0


def test_after_the_fuzzing_the_engine_is_healthy_and_scores(
    running: tuple[Runtime, httpx.Client],
) -> None:
    runtime, client = running
    good = {"station_id": "last", "ts": int(time.time() * 1000), "seq": 1, "temperature": 21}
    assert client.post("/api/readings", json=good).status_code == 202
    eventually(lambda: bool(runtime.store.query(StationReadings("last", 0, LAST_MS)).rows))
    assert client.get("/api/health").status_code == 200
    assert runtime.supervisor.workers["engine"].restarts == 0
