"""Where tests find the real servers that `scripts/services/svc.py` started.

`make test` starts them and exports their addresses (`svc.py env` prints the lines). A test that
needs one calls `require_endpoint`: without the server it skips with a one-line reason, or fails
when CI=true, because CI must exercise the real thing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
SVC = REPO / "scripts" / "services" / "svc.py"


def services_dir() -> Path:
    """Where svc.py keeps each server's pid file, data and log."""
    return Path(os.environ.get("FAULTLINE_SERVICES_DIR", REPO / ".cache" / "services"))


def _first_address(value: str) -> tuple[str, int]:
    netloc = urlsplit(value).netloc if "://" in value else value
    first = netloc.split(",")[0].rsplit("@", 1)[-1]
    host, _, port = first.rpartition(":")
    return host, int(port)


def require_endpoint(env_var: str) -> str:
    """The address in `env_var`, once something answers there; otherwise skip (or fail in CI)."""
    value = os.environ.get(env_var, "")
    if not value:
        problem = f"{env_var} not set: start it with scripts/services/svc.py (see its env command)"
    else:
        try:
            with socket.create_connection(_first_address(value), timeout=2):
                return value
        except (OSError, ValueError) as exc:
            problem = f"{env_var}={value} unreachable: {exc}"
    missing(problem)


def missing(problem: str) -> NoReturn:
    """A server or tool a test needs is not there: skip, except in CI where it must be."""
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def svc(*args: str, timeout_s: float = 300) -> str:
    """Run svc.py (start, stop, status...) and return its output; fail the test if it fails."""
    done = subprocess.run(
        [sys.executable, str(SVC), *args], capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        pytest.fail(f"svc.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout
