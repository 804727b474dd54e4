"""The in-process schedule of the daily global-anomaly job (`faultline up`); production runs the
same job from Airflow (deploy/airflow/global_anomalies_dag.py).

The job for a day runs once `delay_s` has passed after the UTC midnight that ends it, so that
readings still in flight reach the store first. At start the last such day is due at once, so
a process that was down over midnight catches up. Before running a day the schedule reads the
day's run record: a succeeded run that started once the day was due saw all of the day and is
final, so the day is not run again (a restart redoes no work). A day that never ran, whose last
run failed, or whose last run started before it was due (a manual early run, which may have
missed readings) runs. When the record cannot be read the day runs anyway: a run replaces its
day's results, so running a day again is harmless, and a lookup must not cost the day its run.
What was decided and why is logged. Each run, scheduled or retried, leaves the day's run record
in the store (run_global_anomalies writes it), a failed one with its error. The clock is asked
every `poll_s` of real time, so a test's ManualClock moves the schedule by being advanced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date

from faultline.batch.days import day_window, previous_day
from faultline.clock import Clock, datetime_to_ms, iso_ms
from faultline.config import Settings
from faultline.schema import RUN_SUCCEEDED
from faultline.store import GlobalAnomalyRuns, Store

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
    """Run the job for each day as it becomes due, unless its run record in `store` says it is
    done, until `stop` is set.

    A failing run (recorded as failed by the job) is logged and tried again `retry_s` (by
    `clock`) later; it never ends the loop. `job` replaces the real job (run_global_anomalies
    over `store`, with `clock` for the run record's times), for tests.
    """
    if job is None:
        job = _store_job(settings, store, clock)
    delay_ms = round(delay_s * 1000)
    done: date | None = None
    retry_at = 0
    while not stop.is_set():
        now = clock.now_ms()
        due = previous_day(now - delay_ms)
        if due != done and now >= retry_at:
            if _already_done(store, due, day_window(due)[1] + delay_ms):
                done = due
            else:
                try:
                    job(due)
                except Exception:
                    log.exception(
                        "global anomalies of %s failed; trying again in %.0f s", due, retry_s
                    )
                    retry_at = now + round(retry_s * 1000)
                else:
                    done = due
        stop.wait(poll_s)


def _already_done(store: Store, day: date, due_ms: int) -> bool:
    """Whether `day` has a succeeded run that started at or after `due_ms`; logs the decision."""
    try:
        runs = store.query(GlobalAnomalyRuns(day))
    except Exception as exc:
        log.warning(
            "global anomalies of %s: cannot read its run record (%s: %s); running it",
            day,
            type(exc).__name__,
            exc,
        )
        return False
    if not runs:
        log.info("global anomalies of %s: never ran; running it", day)
        return False
    run = runs[-1]  # the day's one record
    started = iso_ms(datetime_to_ms(run.started_at))
    if run.status != RUN_SUCCEEDED:
        log.info(
            "global anomalies of %s: its last run (started %s) failed (%s); running it again",
            day,
            started,
            run.error,
        )
        return False
    if datetime_to_ms(run.started_at) < due_ms:
        log.info(
            "global anomalies of %s: its last run started %s, before the day was due at %s; "
            "running it again",
            day,
            started,
            iso_ms(due_ms),
        )
        return False
    log.info(
        "global anomalies of %s: done by a run started %s, after the day was due at %s; "
        "not running it again",
        day,
        started,
        iso_ms(due_ms),
    )
    return True


def _store_job(settings: Settings, store: Store, clock: Clock) -> Job:
    def run(day: date) -> object:
        from faultline.batch.global_anomalies import run_global_anomalies

        return run_global_anomalies(settings, store, day, clock=clock)

    return run
