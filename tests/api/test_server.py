"""ApiServer: listens when start() returns, frees the port on stop()."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from faultline.api.server import ApiServer


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_port_zero_picks_a_free_port_that_answers_at_once() -> None:
    server = ApiServer(_app(), "127.0.0.1", 0)
    server.start()
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/ping").json() == {"pong": "yes"}
    finally:
        server.stop()


def test_connections_send_responses_without_waiting_for_the_clients_ack() -> None:
    """Nagle's algorithm off: asyncio turns it off for an accepted socket only when the listener
    is marked TCP, and the listener's own TCP_NODELAY is what accepted sockets inherit."""
    server = ApiServer(_app(), "127.0.0.1", 0)
    server.start()
    try:
        listener = server._socket
        assert listener is not None and listener.proto == socket.IPPROTO_TCP
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert httpx.get(f"{server.url}/ping").json() == {"pong": "yes"}
    finally:
        server.stop()


def test_stop_frees_the_port_for_the_next_server() -> None:
    with ApiServer(_app(), "127.0.0.1", 0) as first:
        port = first.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/ping")

    with ApiServer(_app(), "127.0.0.1", port) as second:
        assert httpx.get(f"{second.url}/ping").status_code == 200


def test_a_taken_port_fails_start_with_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            ApiServer(_app(), "127.0.0.1", port).start()


def test_a_wildcard_host_is_shown_as_loopback() -> None:
    with ApiServer(_app(), "0.0.0.0", 0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/ping").status_code == 200


def test_the_port_is_unknown_before_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        _ = ApiServer(_app(), "127.0.0.1", 0).port
