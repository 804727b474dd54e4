"""The in-process schedule, moved by a ManualClock; what it does with a day already on record;
and Runtime running it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from faultline.batch.days import day_window
from faultline.batch.scheduler import run_daily_global_anomalies
from faultline.clock import ManualClock, ms_to_datetime
from faultline.config import load_settings
from faultline.runtime import Runtime
from faultline.schema import RUN_FAILED, RUN_SUCCEEDED, GlobalAnomalyRun
from faultline.store import GlobalAnomalies, GlobalAnomalyRuns, MemoryStore, MinuteAggregates, Store
from faultline.store.sqlite import SqliteStore
from tests.batch.failing import FailingStore
from tests.batch.readings import DAY, START, readings_of
from tests.contract.batches import write_batch
from tests.contract.test_global_anomaly_run_contract import failed_run, run_of

MIDNIGHT = day_window(DAY)[1]  # the one that ends DAY
DUE = MIDNIGHT + 300_000  # DAY is due the default 5 minutes later, at 00:05
NOW = MIDNIGHT + 3_600_000  # 01:00, when the schedules below start


def eventually(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Recorder:
    """A job that records the days it was asked for and fails the first `failures` times."""

    def __init__(self, failures: int = 0) -> None:
        self.days: list[date] = []
        self.failures = failures

    def __call__(self, day: date) -> None:
        self.days.append(day)
        if len(self.days) <= self.failures:
            raise RuntimeError("store unavailable")


@contextmanager
def scheduled(
    clock: ManualClock, job: Recorder | None, store: Store | None = None, **options: float
) -> Iterator[threading.Thread]:
    """The schedule in a thread; job None runs the real job over `store`."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_daily_global_anomalies,
        args=(load_settings(), store or MemoryStore(), clock, stop),
        kwargs={"poll_s": 0.005, "job": job, **options},
    )
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive()


def test_each_day_runs_once_after_its_midnight_and_delay() -> None:
    clock = ManualClock(MIDNIGHT + 60_000)  # 00:01, within the 5 minutes' delay
    job = Recorder()
    with scheduled(clock, job, delay_s=300):
        eventually(lambda: job.days == [DAY - timedelta(days=1)])  # the last day already due
        time.sleep(0.05)
        assert job.days == [DAY - timedelta(days=1)]

        clock.advance(240)  # 00:05
        eventually(lambda: len(job.days) == 2)
        clock.advance(23 * 3600)  # 23:05 the same day: nothing new is due
        time.sleep(0.05)
        assert job.days == [DAY - timedelta(days=1), DAY]

        clock.advance(3600)  # 00:05 the day after
        eventually(lambda: len(job.days) == 3)
    assert job.days == [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]


def test_a_failed_run_is_retried_later_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(MIDNIGHT + 600_000)
    job = Recorder(failures=2)
    with scheduled(clock, job, retry_s=120) as thread:
        eventually(lambda: len(job.days) == 1)
        time.sleep(0.05)
        assert len(job.days) == 1  # not again before retry_s has passed
        clock.advance(120)
        eventually(lambda: len(job.days) == 2)
        clock.advance(120)
        eventually(lambda: len(job.days) == 3)
        clock.advance(120)
        time.sleep(0.05)
        assert thread.is_alive()
    assert job.days == [DAY] * 3
    assert "global anomalies of 2026-03-14 failed; trying again in 120 s" in caplog.text


def test_scheduled_runs_are_recorded_a_failed_one_too() -> None:
    store = FailingStore(MemoryStore(), what=MinuteAggregates, queries=1)
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=17)))
    clock = ManualClock(MIDNIGHT + 600_000)

    def record() -> GlobalAnomalyRun | None:
        runs = store.query(GlobalAnomalyRuns(DAY))
        return runs[0] if runs else None

    with scheduled(clock, None, store, retry_s=120):
        eventually(lambda: record() is not None)
        failed = record()
        assert failed is not None and failed.status == RUN_FAILED
        assert failed.error == "StoreError: MinuteAggregates failed: timed out"
        assert failed.started_at == datetime(2026, 3, 15, 0, 10, tzinfo=UTC)

        clock.advance(120)  # the retry
        eventually(lambda: record() != failed)
    succeeded = record()
    assert succeeded is not None and succeeded.status == RUN_SUCCEEDED
    assert (succeeded.series, succeeded.started_at) == (3, datetime(2026, 3, 15, 0, 12, tzinfo=UTC))


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "faultline.db")
    yield store
    store.close()


@pytest.fixture
def decisions(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The log, with the schedule's decisions (INFO) in it."""
    caplog.set_level(logging.INFO, logger="faultline.batch.scheduler")
    return caplog


def test_a_day_done_once_it_was_due_is_not_run_again_at_start(
    sqlite: SqliteStore, decisions: pytest.LogCaptureFixture
) -> None:
    done = run_of(DAY, [], started=ms_to_datetime(DUE + 60_000))
    sqlite.write(write_batch(global_anomaly_run=done))
    clock = ManualClock(NOW)

    with scheduled(clock, None, sqlite):
        eventually(lambda: "not running it again" in decisions.text)
        clock.advance(24 * 3600)  # the next day is due: the schedule went on past DAY
        eventually(lambda: bool(sqlite.query(GlobalAnomalyRuns(DAY + timedelta(days=1)))))

    assert sqlite.query(GlobalAnomalyRuns(DAY)) == [done]
    assert (
        "global anomalies of 2026-03-14: done by a run started 2026-03-15T00:06:00.000Z, after "
        "the day was due at 2026-03-15T00:05:00.000Z; not running it again" in decisions.text
    )


@pytest.mark.parametrize(
    ("last", "why"),
    [
        (None, "never ran; running it"),
        (
            failed_run(DAY, ms_to_datetime(DUE + 60_000)),
            "its last run (started 2026-03-15T00:06:00.000Z) failed "
            "(StoreError: MinuteAggregates failed: timed out); running it again",
        ),
        (
            run_of(DAY, [], started=ms_to_datetime(MIDNIGHT - 3_600_000)),
            "its last run started 2026-03-14T23:00:00.000Z, before the day was due at "
            "2026-03-15T00:05:00.000Z; running it again",
        ),
        (  # finished after the day was due, but read the store before
            run_of(DAY, [], started=ms_to_datetime(DUE - 1000)),
            "its last run started 2026-03-15T00:04:59.000Z, before the day was due at "
            "2026-03-15T00:05:00.000Z; running it again",
        ),
    ],
    ids=["never-ran", "failed", "succeeded-before-due", "started-before-due"],
)
def test_a_day_not_done_once_it_was_due_runs_at_start(
    sqlite: SqliteStore,
    decisions: pytest.LogCaptureFixture,
    last: GlobalAnomalyRun | None,
    why: str,
) -> None:
    if last is not None:
        sqlite.write(write_batch(global_anomaly_run=last))

    with scheduled(ManualClock(NOW), None, sqlite):
        eventually(lambda: sqlite.query(GlobalAnomalyRuns(DAY)) != ([] if last is None else [last]))

    (run,) = sqlite.query(GlobalAnomalyRuns(DAY))
    assert (run.status, run.started_at) == (RUN_SUCCEEDED, ms_to_datetime(NOW))
    assert f"global anomalies of 2026-03-14: {why}" in decisions.text


def test_a_run_record_that_cannot_be_read_does_not_cost_the_day_its_run(
    sqlite: SqliteStore, decisions: pytest.LogCaptureFixture
) -> None:
    done = run_of(DAY, [], started=ms_to_datetime(DUE + 60_000))
    sqlite.write(write_batch(global_anomaly_run=done))
    store = FailingStore(sqlite, what=GlobalAnomalyRuns, queries=1)

    with scheduled(ManualClock(NOW), None, store):
        eventually(lambda: sqlite.query(GlobalAnomalyRuns(DAY)) != [done])

    (run,) = sqlite.query(GlobalAnomalyRuns(DAY))
    assert (run.status, run.started_at) == (RUN_SUCCEEDED, ms_to_datetime(NOW))
    assert (
        "global anomalies of 2026-03-14: cannot read its run record "
        "(StoreError: GlobalAnomalyRuns failed: timed out); running it" in decisions.text
    )


def test_runtime_runs_the_job_over_its_store(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, bus_url="memory://")
    runtime = Runtime(settings, clock=ManualClock(MIDNIGHT + 3_600_000))
    jumps = {("temperature", 300): 7.0}
    runtime.store.write(write_batch(readings_of("s-1", 0, 1440, seed=11, jumps=jumps)))

    runtime.start_global_anomalies()

    eventually(lambda: bool(runtime.store.query(GlobalAnomalies(DAY))))
    found = {(a.sensor, a.minute) for a in runtime.store.query(GlobalAnomalies(DAY))}
    assert ("temperature", START + 300 * 60_000) in found
    (run,) = runtime.store.query(GlobalAnomalyRuns(DAY))
    assert (run.status, run.anomalies) == (RUN_SUCCEEDED, len(found))
    assert runtime.probes()["global-anomalies"]() is None
    runtime.shutdown(timeout_s=10)
    assert runtime.supervisor.join(0) == []
