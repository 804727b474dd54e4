"""POST /api/readings: readings onto the bus as their own bytes, keyed by station."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faultline.api.ingest_routes import MAX_BODY_BYTES
from faultline.bus import MemoryBus, Message
from faultline.clock import ManualClock
from tests.api.conftest import NOW
from tests.api.helpers import Served, serve

TOPIC = "faultline.readings"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, ManualClock(NOW)) as s:
        yield s


def _published(bus: MemoryBus) -> list[Message]:
    consumer = bus.consumer(TOPIC, "test")
    messages = consumer.consume(1000, timeout_s=0.5)
    consumer.close()
    return messages


def test_one_reading_is_published_as_sent(served: Served) -> None:
    body = b'{"station_id": "s-01", "temperature": 25.1, "humidity": 60.2, "noise_level": 50.3}'

    response = httpx.post(f"{served.url}/api/readings", headers=served.json_auth, content=body)

    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    [message] = _published(served.bus)
    assert message.value == body
    assert message.key == b"s-01"
    assert served.ctx.metrics.http_ingested._value.get() == 1


def test_a_list_is_published_reading_by_reading(served: Served) -> None:
    readings = [
        {"station_id": "s-01", "ts": 1767225600123, "seq": 7, "values": {"temperature": 25.1}},
        {"station_id": "s-02", "ts": "2026-01-01T00:00:00.500Z", "values": {"humidity": 60.0}},
        {"temperature": 25.0},  # no station: still the engine's to judge and dead-letter
    ]

    response = httpx.post(f"{served.url}/api/readings", headers=served.json_auth, json=readings)

    assert response.status_code == 202
    assert response.json() == {"accepted": 3}
    messages = _published(served.bus)
    assert [json.loads(m.value) for m in messages] == readings
    assert [m.key for m in messages] == [b"s-01", b"s-02", None]
    assert served.ctx.metrics.http_ingested._value.get() == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"   ", "empty body"),
        (b"{broken", "malformed JSON"),
        (b'{"station_id": "s-01"} trailing', "malformed JSON"),
        (b'{"station_id": NaN}', "malformed JSON"),
        (b"42", "the body is not a JSON object"),
        (b'"s-01"', "the body is not a JSON object"),
        (b"[]", "empty list"),
        (b'[{"station_id": "s-01"}, 7]', "item 1 is not a JSON object"),
        (b'[{"station_id": "s-01"}, [{}]]', "item 1 is not a JSON object"),
    ],
)
def test_what_is_no_reading_at_all_is_refused_whole(
    served: Served, body: bytes, message: str
) -> None:
    response = httpx.post(f"{served.url}/api/readings", headers=served.json_auth, content=body)

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert _published(served.bus) == []
    assert served.ctx.metrics.http_ingested._value.get() == 0


def test_too_large_a_body_is_413(served: Served) -> None:
    reading = b'{"station_id": "s-01", "temperature": 25.0},'
    body = b"[" + reading * (MAX_BODY_BYTES // len(reading) + 1) + b"{}]"

    response = httpx.post(f"{served.url}/api/readings", headers=served.json_auth, content=body)

    assert response.status_code == 413
    assert "smaller batches" in response.json()["detail"]
    assert _published(served.bus) == []


def test_too_large_a_body_without_a_length_is_cut_off(served: Served) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to go by
        yield b"["
        for _ in range(MAX_BODY_BYTES // 1000 + 1):
            yield b'{"station_id": "s-01", "temperature": 25.0},' * 23

    response = httpx.post(f"{served.url}/api/readings", headers=served.json_auth, content=chunks())

    assert response.status_code == 413
    assert _published(served.bus) == []


def test_a_full_bus_is_503_with_retry_after(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW), bus=MemoryBus(max_messages=2)) as s:
        first = httpx.post(
            f"{s.url}/api/readings", headers=s.json_auth, json=[{"station_id": "a"}] * 2
        )
        second = httpx.post(f"{s.url}/api/readings", headers=s.json_auth, json={"station_id": "a"})

        assert first.status_code == 202
        assert second.status_code == 503
        assert second.headers["retry-after"] == "1"
        assert "full" in second.json()["detail"]
        assert s.ctx.metrics.http_ingested._value.get() == 2


def test_a_full_bus_takes_none_of_a_request(tmp_path: Path) -> None:
    # The finding: a full bus answered 503 after publishing 455 of 9000 readings.
    with serve(tmp_path, ManualClock(NOW), bus=MemoryBus(max_messages=10)) as s:
        assert httpx.post(
            f"{s.url}/api/readings", json=[{"station_id": "a"}] * 8, headers=s.json_auth
        ).is_success
        refused = httpx.post(
            f"{s.url}/api/readings", json=[{"station_id": "b"}] * 5, headers=s.json_auth
        )

        assert refused.status_code == 503
        assert "none of the readings" in refused.json()["detail"]
        assert [m.key for m in _published(s.bus)] == [b"a"] * 8
        assert s.ctx.metrics.http_ingested._value.get() == 8


def test_more_than_the_bus_ever_holds_is_413_at_once(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW), bus=MemoryBus(max_messages=5)) as s:
        refused = httpx.post(
            f"{s.url}/api/readings", json=[{"station_id": "a"}] * 6, headers=s.json_auth
        )

        assert refused.status_code == 413
        assert "more than the bus holds" in refused.json()["detail"]
        assert _published(s.bus) == []


def test_a_retry_with_its_idempotency_key_publishes_nothing(served: Served) -> None:
    body = [{"station_id": "s-01", "temperature": 25.0}, {"station_id": "s-02", "humidity": 61}]
    key = {**served.json_auth, "Idempotency-Key": "3f0c2a9e-retry"}

    first = httpx.post(f"{served.url}/api/readings", json=body, headers=key)
    again = httpx.post(f"{served.url}/api/readings", json=body, headers=key)
    other_key = httpx.post(
        f"{served.url}/api/readings",
        json=body,
        headers={**served.json_auth, "Idempotency-Key": "another"},
    )

    assert (first.status_code, again.status_code, other_key.status_code) == (202, 202, 202)
    assert first.json() == again.json() == {"accepted": 2}
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_published(served.bus)) == 4
    assert served.ctx.metrics.http_ingested._value.get() == 4


def test_an_idempotency_key_reused_for_another_body_is_422(served: Served) -> None:
    key = {**served.json_auth, "Idempotency-Key": "k-1"}
    assert httpx.post(
        f"{served.url}/api/readings", json={"station_id": "a"}, headers=key
    ).is_success

    reused = httpx.post(f"{served.url}/api/readings", json={"station_id": "b"}, headers=key)

    assert reused.status_code == 422
    assert "already used for different records" in reused.json()["detail"]
    assert [m.key for m in _published(served.bus)] == [b"a"]


@pytest.mark.parametrize("key", ["x" * 201, "has space", ""])
def test_a_malformed_idempotency_key_is_refused(served: Served, key: str) -> None:
    answer = httpx.post(
        f"{served.url}/api/readings",
        json={"station_id": "a"},
        headers={**served.json_auth, "Idempotency-Key": key},
    )

    assert answer.status_code == 422
    assert _published(served.bus) == []


def test_a_closed_bus_is_503(served: Served) -> None:
    served.bus.close()

    response = httpx.post(
        f"{served.url}/api/readings", headers=served.json_auth, json={"station_id": "a"}
    )

    assert response.status_code == 503
    assert "closed" in response.json()["detail"]
