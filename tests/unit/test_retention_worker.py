"""The runtime's retention worker: it expires on its interval, outlives a store that fails, and
stops with the stop event the runtime was given."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from faultline.clock import ManualClock
from faultline.config import load_settings
from faultline.runtime import Runtime
from faultline.store import DeadLetterCount, DeadLetterRetention, MemoryStore, StoreError
from tests.contract.batches import T0, dead_letter, write_batch


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class FlakyStore(MemoryStore):
    """A memory store whose first `failures` expiries fail as an unreachable server would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("server unreachable")
        return super().expire(retention, now_ms)


def test_the_worker_outlives_a_failing_store_and_stops_on_the_given_event(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        retention={"dead_letter_max_count": 1, "interval_s": 0.02},
    )
    stop = threading.Event()
    runtime = Runtime(settings, clock=ManualClock(T0 + 1000), stop=stop)
    runtime.store.close()
    runtime.store = FlakyStore(failures=3)
    runtime.store.write(write_batch(dead_letters=[dead_letter(1), dead_letter(2)]))

    runtime.start_retention()

    eventually(lambda: runtime.store.query(DeadLetterCount()) == 1)
    assert runtime.metrics.registry.get_sample_value("faultline_dead_letters_expired_total") == 1
    assert runtime.store.failures == 0  # it failed three times first, and went on
    assert runtime.supervisor.workers["retention"].restarts == 0
    stop.set()
    assert runtime.supervisor.join(5) == []
