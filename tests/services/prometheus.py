"""A real Prometheus (Debian package `prometheus`) that a test starts for itself, scraping the
targets the test names with the rule files it names, every second, on a free loopback port.

Not a shared svc.py service: its configuration is the test's (which process to scrape, this
checkout's rules) and its series must be the test's alone (docs/decisions/0012). Without the
binary the test skips, or fails when CI=true (`make test` installs the package).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.services.endpoints import missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the error in the body
            answer = json.loads(exc.read())
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        """The answer to an instant query: status, and data or error."""
        return self.get("/api/v1/query", query=expr)  # type: ignore[no-any-return]

    def series(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns; fails on an error answer."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        result = answer["data"]["result"]
        return result if answer["data"]["resultType"] == "vector" else [result]

    def rules(self) -> list[dict[str, Any]]:
        groups = self.get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")["data"]["alerts"]  # type: ignore[no-any-return]


@contextmanager
def running_prometheus(
    workdir: Path, targets: Mapping[str, str], rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job name → host:port, path /metrics) every second and
    evaluating `rule_files` every second, until the block ends."""
    binary = shutil.which("prometheus")
    if binary is None:
        missing("prometheus not installed (Debian package prometheus)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (
                f"prometheus exited: {(workdir / 'prometheus.log').read_text()}"
            )
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready after 60 s"
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
