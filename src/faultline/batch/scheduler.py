"""The in-process schedule of the daily global-anomaly job (`faultline up`); production runs the
same job from Airflow (deploy/airflow/global_anomalies_dag.py).

The job for a day runs once `delay_s` has passed after the UTC midnight that ends it, so that
readings still in flight reach the store first. At start the last such day is run at once:
a process that was down over midnight catches up, and as a run replaces its day's results,
running a day again is harmless. Each run, scheduled or retried, leaves the day's run record in
the store (run_global_anomalies writes it), a failed one with its error. The clock is asked
every `poll_s` of real time, so a test's ManualClock moves the schedule by being advanced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date

from faultline.batch.days import previous_day
from faultline.clock import Clock
from faultline.config import Settings
from faultline.store import Store

log = logging.getLogger(__name__)

Job = Callable[[date], object]


def run_daily_global_anomalies(
    settings: Settings,
    store: Store,
    clock: Clock,
    stop: threading.Event,
    *,
    delay_s: float = 300.0,
    poll_s: float = 30.0,
    retry_s: float = 600.0,
    job: Job | None = None,
) -> None:
    """Run the job for each day as it becomes due, until `stop` is set.

    A failing run (recorded as failed by the job) is logged and tried again `retry_s` (by
    `clock`) later; it never ends the loop. `job` replaces the real job (run_global_anomalies
    over `store`, with `clock` for the run record's times), for tests.
    """
    if job is None:
        job = _store_job(settings, store, clock)
    done: date | None = None
    retry_at = 0
    while not stop.is_set():
        now = clock.now_ms()
        due = previous_day(now - round(delay_s * 1000))
        if due != done and now >= retry_at:
            try:
                job(due)
            except Exception:
                log.exception("global anomalies of %s failed; trying again in %.0f s", due, retry_s)
                retry_at = now + round(retry_s * 1000)
            else:
                done = due
        stop.wait(poll_s)


def _store_job(settings: Settings, store: Store, clock: Clock) -> Job:
    def run(day: date) -> object:
        from faultline.batch.global_anomalies import run_global_anomalies

        return run_global_anomalies(settings, store, day, clock=clock)

    return run
