"""The SQLite bus's disk fills up under HTTP ingest: 503 with Retry-After and nothing taken,
never a 500, and the same process takes readings again once there is room.

A real full disk: a small tmpfs (root only, as in test_store_outage.py) holding only the bus,
filled to the last byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faultline.bus import SqliteBus
from faultline.clock import ManualClock
from tests.api.conftest import NOW
from tests.api.helpers import serve
from tests.faults.durability import SmallDisk

TOPIC = "faultline.readings"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    problem = SmallDisk.mount_error()
    if problem:
        pytest.skip(problem)
    disk = SmallDisk(tmp_path / "disk", 8)
    disk.mount()
    yield disk
    disk.unmount()


def readings(station: str, count: int) -> list[dict[str, object]]:
    # Wider than anything the bus wrote before the disk filled, so that SQLite has to grow
    # its files rather than reuse pages it already holds.
    return [{"station_id": station, "seq": i, "note": "x" * 200} for i in range(count)]


def test_a_full_disk_is_503_with_nothing_taken_and_publishing_resumes_once_freed(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    bus = SqliteBus(small_disk.path / "bus.db", poll_s=0.01)
    with serve(tmp_path, ManualClock(NOW), bus=bus) as s:  # type: ignore[arg-type]
        consumer = bus.consumer(TOPIC, "engine")
        assert httpx.post(f"{s.url}/api/readings", headers=s.json_auth, json=readings("a", 1))
        assert len(consumer.consume(10, timeout_s=1)) == 1

        small_disk.fill()
        assert small_disk.free_bytes() == 0
        refused = httpx.post(
            f"{s.url}/api/readings", headers=s.json_auth, json=readings("b", 2000), timeout=30
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert "none of the 2000 records published" in refused.json()["detail"]
        assert "full" in refused.json()["detail"]
        assert consumer.consume(10, timeout_s=0.2) == []  # nothing taken

        small_disk.free()
        accepted = httpx.post(
            f"{s.url}/api/readings", headers=s.json_auth, json=readings("b", 2000), timeout=30
        )
        assert accepted.status_code == 202, accepted.text
        got = []
        while batch := consumer.consume(5000, timeout_s=0.5):
            got += batch
        assert len(got) == 2000 and all(b'"b"' in m.value for m in got)
        consumer.close()
