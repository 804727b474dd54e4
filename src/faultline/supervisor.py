"""Worker threads that never die silently: a crashed worker is logged, counted and restarted.

A worker is a function that runs until the shared stop event is set. If it raises, the supervisor
logs the exception, counts it in `faultline_worker_restarts_total{worker}`, reports the worker as
unhealthy while it waits, and starts it again after an exponential backoff (reset once the
worker has run for `healthy_after_s` without crashing), so a fault that persists costs a retry
every `backoff_max_s` rather than a busy loop, and a transient one costs a second. A worker that
returns on its own while Faultline is not stopping is reported as stopped, not restarted: it
decided it was done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from faultline.metrics import Metrics

log = logging.getLogger(__name__)

Target = Callable[[threading.Event], None]


@dataclass
class Worker:
    """What the supervisor knows of one worker, for health checks and tests."""

    name: str
    restarts: int = 0
    last_error: str | None = None
    state: str = "starting"  # running, backoff (crashed, waiting to restart), finished
    retry_at: float | None = None  # monotonic time of the next start while in backoff
    thread: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Starts workers in daemon threads and restarts them when they crash."""

    def __init__(
        self,
        stop: threading.Event,
        metrics: Metrics,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self._stop = stop
        self._metrics = metrics
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._healthy_after_s = healthy_after_s
        self.workers: dict[str, Worker] = {}

    def spawn(self, name: str, target: Target) -> Worker:
        if name in self.workers:
            raise ValueError(f"a worker named {name!r} already runs")
        worker = Worker(name)
        worker.thread = threading.Thread(
            target=self._supervise, args=(worker, target), name=name, daemon=True
        )
        self.workers[name] = worker
        self._metrics.worker_up.labels(worker=name).set(0)
        # Exported at 0 from the start: Prometheus sees no increase in a counter whose first
        # sample is already 1, so an alert on the first restart needs the 0 before it.
        self._metrics.worker_restarts.labels(worker=name)
        worker.thread.start()
        return worker

    def _supervise(self, worker: Worker, target: Target) -> None:
        up = self._metrics.worker_up.labels(worker=worker.name)
        delay = self._backoff_initial_s
        while not self._stop.is_set():
            worker.state, worker.retry_at = "running", None
            up.set(1)
            started = time.monotonic()
            try:
                target(self._stop)
            except Exception as exc:
                up.set(0)
                if time.monotonic() - started >= self._healthy_after_s:
                    delay = self._backoff_initial_s
                worker.restarts += 1
                worker.last_error = f"{type(exc).__name__}: {exc}"
                worker.state, worker.retry_at = "backoff", time.monotonic() + delay
                self._metrics.worker_restarts.labels(worker=worker.name).inc()
                log.exception("%s crashed; restarting in %.1f s", worker.name, delay)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self._backoff_max_s)
                continue
            break
        up.set(0)
        worker.state = "finished"

    def probe(self, name: str) -> Callable[[], str | None]:
        """A health check for the worker: None while it runs (or Faultline is stopping)."""
        worker = self.workers[name]

        def check() -> str | None:
            if self._stop.is_set() or worker.state in ("running", "starting"):
                return None
            if worker.state == "backoff":
                wait = max((worker.retry_at or 0) - time.monotonic(), 0)
                return f"crashed ({worker.last_error}); restart {worker.restarts} in {wait:.1f} s"
            return "stopped unexpectedly"

        return check

    def join(self, timeout_s: float) -> list[str]:
        """Wait for every worker to end (after stop is set); the names of those still running."""
        deadline = time.monotonic() + timeout_s
        late = []
        for worker in self.workers.values():
            assert worker.thread is not None
            worker.thread.join(max(deadline - time.monotonic(), 0))
            if worker.thread.is_alive():
                late.append(worker.name)
        return late
