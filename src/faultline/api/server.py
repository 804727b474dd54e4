"""Runs the app under uvicorn in a background thread, so one process can host engine and API."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_S = 10.0
GRACE_S = 5  # requests in flight get this long to finish
SHUTDOWN_TIMEOUT_S = 10.0


class ApiServer:
    """`start()` returns once the server accepts connections; port 0 picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
        self._app = app
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches the server (wildcard hosts mean loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        # Binding here, not in uvicorn, makes a taken port an exception in the caller's thread
        # and lets port 0 be resolved before anyone asks for the URL.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY on accepted connections only when
        # the socket says it is TCP, and without it every response waited ~40 ms for the
        # client's delayed ACK (bench/bench_queries.py: a 0.1 ms query answered in 51 ms). The
        # listener's own TCP_NODELAY is inherited by what it accepts, on Linux, as a second line.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}"
            ) from exc
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            timeout_graceful_shutdown=GRACE_S,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="api-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive():
                self._release()
                raise RuntimeError("the API server stopped while starting; see the log above")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API server did not start within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Finish requests in flight, close connections and free the port."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(SHUTDOWN_TIMEOUT_S)
        if self._thread.is_alive():
            # Requests still running after the grace period: stop waiting for them.
            self._server.force_exit = True
            self._thread.join(SHUTDOWN_TIMEOUT_S)
        self._release()

    def _release(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None
        self._thread = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
