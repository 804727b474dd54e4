"""The store goes away under HTTP ingest and comes back: nothing acknowledged is lost, and the
same `faultline up` process is healthy and storing again, without a restart.

Bounded versions of bench/bench_outage.py (30 s outages at 5,000 readings/s): PostgreSQL
stopped for a few seconds (a PostgreSQL of this test's own, started through
scripts/services/svc.py, never the shared one), and the data dir's disk full for a few seconds
(a small tmpfs, which needs root).
"""

from __future__ import annotations

import glob
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.durability import (
    SMALL_MODEL,
    Faultline,
    Load,
    PrivatePostgres,
    SmallDisk,
    StoredRows,
    Tally,
    drain,
    postgres_rows,
    sqlite_rows,
    tally,
)
from tests.services.endpoints import missing

pytestmark = pytest.mark.slow

OUTAGE_S = 5.0
# Apart from the shared servers (offset 0), svc.py's own tests (700) and bench_outage (500).
PORT_OFFSET = 600


def until(check: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def healthy(app: Faultline) -> bool:
    try:
        return app.health()[0] == 200
    except httpx.HTTPError:  # no answer within the probe's timeout is not healthy either
        return False


def outage(app: Faultline, read: Callable[[], StoredRows], fail: Callable[[], object],
           recover: Callable[[], None]) -> Tally:  # fmt: skip
    """Load, fail the store for OUTAGE_S, recover it, check the same process recovered, and
    count what the store holds against what was acknowledged."""
    app.start()
    pid = app.pid
    load = Load(app.url, app.token, rate=2000, batch=100, stations=20).start()
    try:
        time.sleep(1.5)
        began = time.monotonic()
        fail()
        assert until(lambda: not healthy(app), 30), "the fault never showed in /api/health"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - began)))
        recover()
        before = len(set(read().rows))
        assert until(lambda: healthy(app)), f"never healthy again:\n{app.tail()}"
        assert until(lambda: len(set(read().rows)) > before), f"not storing again:\n{app.tail()}"
        time.sleep(1.0)
    finally:
        load.stop()
    acked = load.acked_keys()
    stored = drain(acked, read, 60, 5)
    assert app.proc is not None and app.proc.poll() is None and app.pid == pid, "it restarted"
    app.stop()
    return tally(acked, stored)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        missing("PostgreSQL is not installed: scripts/services/svc.py install postgres")
    # Not pytest's tmp_path: as root svc.py runs PostgreSQL as `postgres`, which cannot enter it.
    root = Path(tempfile.mkdtemp(prefix="faultline-pg-outage-"))
    pg = PrivatePostgres(root / "services", PORT_OFFSET)
    try:
        pg.start()
    except RuntimeError as exc:
        pg.stop()
        missing(f"a private PostgreSQL did not start: {exc}")
    yield pg
    pg.stop()


def test_postgres_stopped_under_load_loses_nothing_and_recovers_without_restart(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    url = private_postgres.schema_url("outage")
    app = Faultline(tmp_path / "data", store_url=url, env=SMALL_MODEL)
    count = outage(app, lambda: postgres_rows(url), private_postgres.stop, private_postgres.start)
    assert count.acked >= 4000
    assert (count.lost, count.duplicated, count.overcounted, count.dead_lettered) == (0, 0, 0, 0)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    problem = SmallDisk.mount_error()
    if problem:
        pytest.skip(problem)
    disk = SmallDisk(tmp_path / "disk", 128)
    disk.mount()
    yield disk
    disk.unmount()


def test_a_full_disk_under_load_loses_nothing_and_recovers_without_restart(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    db = small_disk.path / "data" / "faultline.db"
    app = Faultline(small_disk.path / "data", env=SMALL_MODEL, log_path=tmp_path / "up.log")

    def fill() -> None:
        small_disk.fill()
        assert small_disk.free_bytes() == 0

    count = outage(app, lambda: sqlite_rows(db), fill, small_disk.free)
    assert count.acked >= 4000
    assert (count.lost, count.duplicated, count.overcounted, count.dead_lettered) == (0, 0, 0, 0)


def test_health_answers_503_naming_the_store_while_postgres_is_down_and_200_after(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    app = Faultline(tmp_path / "data", store_url=private_postgres.schema_url("health"),
                    env=SMALL_MODEL)  # fmt: skip
    app.start()
    pid = app.pid
    try:
        assert until(lambda: healthy(app)), app.tail()
        private_postgres.stop()
        # A generous client timeout: the finding is the status, not how fast it came.
        down = httpx.get(f"{app.url}/api/health", timeout=10)
        assert down.status_code == 503, down.text
        store = down.json()["components"]["store"]
        assert store["status"] == "error" and "127.0.0.1" in store["detail"], store
        private_postgres.start()
        assert until(lambda: httpx.get(f"{app.url}/api/health", timeout=10).status_code == 200)
        assert app.proc is not None and app.proc.poll() is None and app.pid == pid
    finally:
        app.stop()
