"""A crashed worker is logged, counted, reported unhealthy while it waits, and restarted."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from faultline.metrics import Metrics
from faultline.supervisor import Supervisor


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def value(metrics: Metrics, name: str, worker: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"worker": worker})


def test_a_crashing_worker_is_restarted_with_backoff_and_counted() -> None:
    stop, metrics = threading.Event(), Metrics()
    runs: list[float] = []

    def flaky(stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) <= 3:
            raise OSError(f"crash {len(runs)}")
        stop.wait()

    supervisor = Supervisor(stop, metrics, backoff_initial_s=0.05, backoff_max_s=0.2)
    supervisor.spawn("engine", flaky)

    eventually(lambda: len(runs) == 4)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # doubling, capped
    assert value(metrics, "faultline_worker_restarts_total", "engine") == 3
    eventually(lambda: value(metrics, "faultline_worker_up", "engine") == 1)
    assert supervisor.probe("engine")() is None
    assert supervisor.workers["engine"].last_error == "OSError: crash 3"
    stop.set()
    assert supervisor.join(5) == []
    assert value(metrics, "faultline_worker_up", "engine") == 0


def test_health_says_why_while_the_worker_waits_to_restart() -> None:
    stop, metrics = threading.Event(), Metrics()
    crashed = threading.Event()

    def broken(stop: threading.Event) -> None:
        crashed.set()
        raise RuntimeError("store exploded")

    supervisor = Supervisor(stop, metrics, backoff_initial_s=30)
    supervisor.spawn("simulator", broken)
    eventually(lambda: supervisor.workers["simulator"].state == "backoff")

    problem = supervisor.probe("simulator")()
    assert problem is not None
    assert "crashed (RuntimeError: store exploded); restart 1 in" in problem
    stop.set()  # a stop during the backoff ends the worker at once, not after 30 s
    assert supervisor.join(5) == []
    assert supervisor.probe("simulator")() is None  # stopping is not a failure


def test_a_worker_that_returns_on_its_own_is_reported_not_restarted() -> None:
    stop, metrics = threading.Event(), Metrics()
    calls = []
    supervisor = Supervisor(stop, metrics, backoff_initial_s=0.01)
    supervisor.spawn("scheduler", lambda stop: calls.append(1))

    eventually(lambda: supervisor.workers["scheduler"].state == "finished")
    assert calls == [1]
    assert supervisor.probe("scheduler")() == "stopped unexpectedly"
    # Exported though it never restarted: an alert sees the first restart as an increase.
    assert value(metrics, "faultline_worker_restarts_total", "scheduler") == 0
