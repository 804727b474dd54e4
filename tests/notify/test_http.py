"""Signing, verifying, and how a POST's outcome is classified (against a real local server)."""

from __future__ import annotations

import socket
import threading

import pytest

from faultline.notify.http import Rejected, Retryable, post, sign, verify
from tests.notify.support import Sink, serving

SECRET = b"s3cret"


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"key":"a"}'
    expected = hmac.new(SECRET, b"1767225600000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_767_225_600_000, body) == f"sha256={expected}"


def test_verify_refuses_another_body_secret_or_an_old_timestamp() -> None:
    body, ts = b"{}", 1_767_225_600_000
    good = sign(SECRET, ts, body)
    assert verify(SECRET, str(ts), body, good, now_ms=ts + 1000)
    assert not verify(SECRET, str(ts), b"{ }", good, now_ms=ts)
    assert not verify(b"other", str(ts), body, good, now_ms=ts)
    assert not verify(SECRET, str(ts + 1), body, good, now_ms=ts)
    assert not verify(SECRET, str(ts), body, good, now_ms=ts + 301_000)
    assert not verify(SECRET, "soon", body, good, now_ms=ts)


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (400, Rejected, "rejected"),
        (404, Rejected, "rejected"),
        (408, Retryable, "status"),
        (429, Retryable, "status"),
        (500, Retryable, "status"),
        (503, Retryable, "status"),
        (301, Retryable, "status"),
    ],
)
def test_answers_are_classified(status: int, error: type[Exception], reason: str) -> None:
    with serving(Sink(status=status)) as sink, pytest.raises(error) as caught:
        post(sink.url, b"{}", {}, timeout_s=5)
    assert caught.value.reason == reason  # type: ignore[attr-defined]
    assert str(status) in str(caught.value)


def test_a_2xx_is_delivered_with_the_headers() -> None:
    with serving(Sink(status=202)) as sink:
        assert post(sink.url, b'{"a":1}', {"Idempotency-Key": "k"}, timeout_s=5) == 202
    [request] = sink.requests
    assert request.body == b'{"a":1}'
    assert request.headers["Idempotency-Key"] == "k"
    assert request.headers["Content-Type"] == "application/json"


def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/"
        with pytest.raises(Retryable) as caught:
            post(url, b"{}", {}, timeout_s=5)
    assert caught.value.reason == "network"


def test_a_receiver_that_does_not_answer_times_out() -> None:
    with socket.socket() as listening:  # accepts into its backlog, never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/"
        with pytest.raises(Retryable) as caught:
            post(url, b"{}", {}, timeout_s=0.3)
    assert caught.value.reason == "timeout"


def test_retry_after_is_passed_on() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(429)
            self.send_header("Retry-After", "7")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(Retryable) as caught:
            post(f"http://127.0.0.1:{server.server_address[1]}/", b"{}", {}, timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.retry_after_s == 7.0
