"""Dead letters are bounded: a flood of large bad payloads keeps only a prefix of each, the
retention worker trims them to the count and the age set in `[retention]` (counted in
faultline_dead_letters_expired_total), and GET /api/dead_letters answers in bounded bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from faultline.api.app import create_app
from faultline.api.server import ApiServer
from faultline.clock import ManualClock
from faultline.config import load_settings
from faultline.runtime import Runtime
from faultline.schema import DEAD_LETTER_PAYLOAD_BYTES
from faultline.store import DeadLetterCount
from tests.tokens import admin_token, bearer

POSTS = 150
PAYLOAD_BYTES = 200_000  # 50 times the prefix a dead letter keeps
KEEP = 100


def eventually(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, httpx.Client]]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("bounds"),
        bus_url="memory://",
        model={"n_estimators": 20, "train_samples": 500},
        engine={"batch_max_wait_s": 0.05},
        retention={
            "dead_letter_max_age_s": 30 * 86_400,
            "dead_letter_max_count": KEEP,
            "interval_s": 0.1,
        },
    )
    # The bus stamps messages with the wall clock; retention asks this one, moved by the test.
    runtime = Runtime(settings, clock=ManualClock(int(time.time() * 1000)))
    runtime.load_model()
    runtime.start_engine()
    runtime.start_retention()
    ctx = runtime.app_context()
    headers = bearer(admin_token(ctx.tokens))
    with (
        ApiServer(create_app(ctx), port=0) as server,
        httpx.Client(base_url=server.url, headers=headers) as client,
    ):
        yield runtime, client
    runtime.shutdown()


def expired(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("faultline_dead_letters_expired_total "):
            return float(line.split()[1])
    raise AssertionError("no faultline_dead_letters_expired_total in /metrics")


def test_large_bad_payloads_are_kept_as_prefixes_trimmed_to_the_count_then_the_age(
    running: tuple[Runtime, httpx.Client],
) -> None:
    runtime, client = running
    for n in range(POSTS):
        # A reading object the API passes on and the decoder refuses: one dead letter each.
        body = {"station_id": f"s-{n}", "temperature": "x" * PAYLOAD_BYTES}
        posted = client.post("/api/readings", json=body)
        assert posted.status_code == 202, posted.text

    eventually(lambda: expired(client) == POSTS - KEEP)
    assert runtime.store.query(DeadLetterCount()) == KEEP

    answer = client.get("/api/dead_letters", params={"limit": 1000})
    assert answer.status_code == 200
    letters = answer.json()
    assert len(letters) == KEEP
    assert all(len(d["payload"]) <= DEAD_LETTER_PAYLOAD_BYTES for d in letters)
    # Posted: 30 MB; answered: a prefix of each letter kept, and no more than the count.
    assert len(answer.content) < KEEP * (DEAD_LETTER_PAYLOAD_BYTES + 1000)
    assert client.get("/api/dead_letters", params={"limit": 1001}).status_code == 422

    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(31 * 86_400)
    eventually(lambda: expired(client) == POSTS)
    assert runtime.store.query(DeadLetterCount()) == 0
    assert client.get("/api/dead_letters").json() == []
    assert runtime.supervisor.workers["retention"].restarts == 0
