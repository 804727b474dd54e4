"""Where services keep their state, and the background processes svc.py starts and finds again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

import probes

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("FAULTLINE_SERVICES_DIR", ROOT / ".cache" / "services")).resolve()
ARTIFACTS = Path(os.environ.get("FAULTLINE_ARTIFACTS_DIR", ROOT / ".cache" / "artifacts")).resolve()
HOST = "127.0.0.1"
# Shifts every port, so a second set of services (another checkout, svc.py's own tests) can run
# beside the first.
PORT_OFFSET = int(os.environ.get("FAULTLINE_SERVICES_PORT_OFFSET", "0"))


class ServiceError(RuntimeError):
    """A service could not be installed, started or stopped; the message says why."""


def log(message: str) -> None:
    print(f"[svc {time.strftime('%H:%M:%S')}] {message}", flush=True)


def render(template: Path, target: Path, **values: object) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    text = Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Process:
    """One server process that we start in the background and find again by its pid file."""

    name: str
    stop_signal: int = signal.SIGTERM
    grace_s: float = 30.0

    @property
    def dir(self) -> Path:
        return STATE / self.name

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    def pid(self) -> int | None:
        """The pid when the process still runs; a recycled pid does not count.

        Every command line we launch names a file under this process's state directory, so a
        stranger that inherited the pid (or a zombie, whose command line is empty) is ignored.
        """
        try:
            pid = int(self.pid_file.read_text())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        if state in ("Z", "X"):
            return None
        # Right after exec the kernel shows an empty command line for a moment.
        return pid if not cmdline or str(self.dir).encode() in cmdline else None

    def launch(self, argv: Sequence[str], user: str | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            out.flush()
            child = subprocess.Popen(
                argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, user=user,
            )  # fmt: skip
        self.pid_file.write_text(str(child.pid))

    def signal(self) -> int | None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, self.stop_signal)
        return pid

    def wait_gone(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = self.pid()
        if pid is not None:
            log(f"{self.name}: still running after {self.grace_s:g} s, SIGKILL")
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)


def wait_ready(
    procs: Sequence[Process], probe: Callable[[], str], timeout_s: float, what: str
) -> str:
    """Poll `probe` until it answers; fail at once if a process dies, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.pid() is None:
                raise ServiceError(
                    f"{proc.name} exited before {what} was ready; last lines of "
                    f"{proc.log_file}:\n{log_tail(proc.log_file)}"
                )
        try:
            return probe()
        except (OSError, probes.ProbeError) as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.log_file}\n{log_tail(p.log_file)}" for p in procs)
    raise ServiceError(f"{what} not ready after {timeout_s:g} s ({last})\n{logs}")


def require_free(port: int, owner: str) -> None:
    if probes.port_open(HOST, port):
        raise ServiceError(f"port {port} is taken by a process that is not {owner}'s")
