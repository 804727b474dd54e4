"""The daily job over a real SQLite store filled with a day of readings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from faultline.batch.global_anomalies import GlobalAnomalyRunFailed, run_global_anomalies
from faultline.batch.shesd import ShesdParams
from faultline.clock import ManualClock
from faultline.config import Settings, load_settings
from faultline.schema import RUN_FAILED, RUN_SUCCEEDED
from faultline.store import (
    GlobalAnomalies,
    GlobalAnomalyRuns,
    MinuteAggregates,
    SqliteStore,
    StoreError,
)
from tests.batch.failing import FailingStore
from tests.batch.readings import DAY, END, MINUTE, START, readings_of
from tests.contract.batches import SENSORS, reading_frame, write_batch


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "faultline.db")
    yield opened
    opened.close()


def test_injected_anomalies_are_found_and_stored(settings: Settings, store: SqliteStore) -> None:
    jumps = {("temperature", 300): 6.0, ("humidity", 1000): -9.0, ("humidity", 1001): -9.0}
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=1, jumps=jumps)))
    store.write(write_batch(readings_of("s-2", 0, 1440, seed=2)))
    clock = ManualClock(END + 600_000)

    report = run_global_anomalies(settings, store, DAY, clock=clock)

    found = {(a.station_id, a.sensor, (a.minute - START) // MINUTE) for a in report.anomalies}
    assert {("s-1", sensor, minute) for sensor, minute in jumps} <= found
    assert len(found) <= len(jumps) + 1  # alpha 0.05 over 6 series allows a stray one
    assert report.series == 6 and report.skipped == ()
    run = report.run
    assert (run.day, run.status, run.series, run.skipped) == (DAY, RUN_SUCCEEDED, 6, {})
    assert (run.anomalies, run.error) == (len(report.anomalies), None)
    moment = datetime(2026, 3, 15, 0, 10, tzinfo=UTC)  # the clock: 10 minutes after the day
    assert run.started_at == run.finished_at == moment
    assert store.query(GlobalAnomalyRuns(DAY)) == [run]
    assert store.query(GlobalAnomalies(DAY)) == sorted(
        report.anomalies, key=lambda a: (a.station_id, a.sensor, a.minute)
    )
    spike = next(a for a in report.anomalies if a.sensor == "temperature" and a.station_id == "s-1")
    assert spike.value - spike.expected == pytest.approx(6.0, abs=1.0)
    assert spike.score > 5 and spike.day == DAY


def test_running_a_day_again_stores_the_same(settings: Settings, store: SqliteStore) -> None:
    jumps = {("noise_level", 720): 10.0}
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=3, jumps=jumps)))
    first = run_global_anomalies(settings, store, DAY)

    again = run_global_anomalies(settings, store, DAY)

    assert again.anomalies == first.anomalies
    assert store.query(GlobalAnomalies(DAY)) == list(first.anomalies)


def test_a_day_without_readings_is_an_empty_report(settings: Settings, store: SqliteStore) -> None:
    store.write(write_batch(readings_of("s-1", -1440, 1440, seed=4)))  # the day before

    report = run_global_anomalies(settings, store, DAY)

    assert (report.series, report.anomalies, report.skipped) == (0, (), ())
    assert store.query(GlobalAnomalies(DAY)) == []
    assert store.query(GlobalAnomalyRuns(DAY)) == [report.run]  # ran, and found nothing
    assert report.run.status == RUN_SUCCEEDED
    assert report.summary().startswith(
        "global anomalies of 2026-03-14: succeeded, 0 anomalies in 0 series, 0 skipped\n"
        "  run from 20"
    )


def test_only_the_days_own_minutes_are_tested(settings: Settings, store: SqliteStore) -> None:
    after = {("temperature", 1440 + 30): 20.0}  # an anomaly just after midnight
    store.write(write_batch(readings_of("s-1", 720, 1440, seed=5, jumps=after)))

    report = run_global_anomalies(settings, store, DAY)

    assert report.series == 3
    assert all(START <= a.minute < END for a in report.anomalies)


def test_series_too_short_or_too_sparse_are_skipped_with_the_reason(
    settings: Settings, store: SqliteStore
) -> None:
    store.write(write_batch(readings_of("short", 600, 90, seed=6)))
    sparse = readings_of("sparse", 0, 1440, seed=7, per_minute=1)
    store.write(write_batch(sparse[sparse["ts"] // MINUTE % 3 == 0].reset_index(drop=True)))
    store.write(write_batch(readings_of("whole", 0, 1440, seed=8)))

    report = run_global_anomalies(settings, store, DAY)

    reasons = {(s.station_id, s.sensor): s.reason for s in report.skipped}
    assert set(reasons) == {
        (station, sensor) for station in ("short", "sparse") for sensor in SENSORS
    }
    assert reasons[("short", "humidity")] == (
        "its readings span 90 minutes; S-H-ESD needs two seasonal periods (120 minutes)"
    )
    assert reasons[("sparse", "humidity")].startswith("only 480 of the 1438 minutes")
    assert report.series == 3
    assert report.run.skipped == {"too_short": 3, "too_sparse": 3}
    assert {s.kind for s in report.skipped if s.station_id == "short"} == {"too_short"}
    assert "skipped short/humidity: its readings span 90 minutes" in report.summary()
    assert ", 6 skipped (3 too_short, 3 too_sparse)\n" in report.summary()
    assert store.query(GlobalAnomalyRuns(DAY)) == [report.run]


def test_gaps_are_filled_but_never_reported(settings: Settings, store: SqliteStore) -> None:
    frame = readings_of("s-1", 0, 1440, seed=9, jumps={("temperature", 400): 8.0})
    minute = (frame["ts"] - START) // MINUTE
    store.write(write_batch(frame[(minute < 800) | (minute >= 860)].reset_index(drop=True)))

    report = run_global_anomalies(settings, store, DAY)

    minutes = {(a.minute - START) // MINUTE for a in report.anomalies}
    assert 400 in minutes
    assert not minutes & set(range(800, 860))


def test_parameters_reach_the_test(settings: Settings, store: SqliteStore) -> None:
    store.write(write_batch(readings_of("s-1", 0, 200, seed=10)))

    report = run_global_anomalies(settings, store, DAY, params=ShesdParams(period=120))

    assert report.series == 0 and len(report.skipped) == 3


def test_a_rerun_deletes_the_anomalies_it_no_longer_finds(
    settings: Settings, store: SqliteStore
) -> None:
    spike = {("temperature", 300): 8.0}
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=13, jumps=spike)))
    first = run_global_anomalies(settings, store, DAY)
    assert ("temperature", START + 300 * MINUTE) in {(a.sensor, a.minute) for a in first.anomalies}

    # Late readings of that minute, at the level around it, bring its mean back into line.
    late = START + 300 * MINUTE + 500 + 1000 * np.arange(57)
    normal = store.query(MinuteAggregates(START + 299 * MINUTE, START + 300 * MINUTE))
    level = normal.set_index("sensor")["mean"].reindex(list(SENSORS)).to_numpy()
    store.write(write_batch(reading_frame("s-1", late, values=[level] * 57)))
    again = run_global_anomalies(settings, store, DAY, clock=ManualClock(END + 3_600_000))

    stored = store.query(GlobalAnomalies(DAY))
    assert ("temperature", START + 300 * MINUTE) not in {(a.sensor, a.minute) for a in stored}
    assert stored == list(again.anomalies)
    assert store.query(GlobalAnomalyRuns(DAY)) == [again.run]


def test_a_run_whose_store_fails_midway_is_recorded_as_failed(
    settings: Settings, store: SqliteStore
) -> None:
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=14, jumps={("humidity", 60): 9.0})))
    store.write(write_batch(readings_of("s-2", 0, 1440, seed=15)))
    before = run_global_anomalies(settings, store, DAY)
    flaky = FailingStore(store, what=MinuteAggregates, queries=1)
    clock = ManualClock(END + 7_200_000)

    with pytest.raises(GlobalAnomalyRunFailed) as failed:
        run_global_anomalies(settings, flaky, DAY, clock=clock)

    assert isinstance(failed.value.__cause__, StoreError)
    (run,) = store.query(GlobalAnomalyRuns(DAY))
    assert run == failed.value.report.run
    assert (run.status, run.series, run.anomalies) == (RUN_FAILED, 0, 0)
    assert run.error == "StoreError: MinuteAggregates failed: timed out"
    assert run.started_at == datetime(2026, 3, 15, 2, 0, tzinfo=UTC)
    assert failed.value.report.not_recorded is None
    assert store.query(GlobalAnomalies(DAY)) == list(before.anomalies)  # the last results stay
    assert str(failed.value).startswith(
        "global anomalies of 2026-03-14: failed: StoreError: MinuteAggregates failed: timed out; "
        "before that, 0 anomalies in 0 series, 0 skipped; run from 2026-03-15T02:00:00.000Z"
    )
    assert str(failed.value).endswith(", recorded")

    again = run_global_anomalies(settings, flaky, DAY)  # the store answers again
    assert store.query(GlobalAnomalyRuns(DAY)) == [again.run]
    assert again.run.status == RUN_SUCCEEDED


def test_a_run_whose_results_cannot_be_written_keeps_the_days_last_results(
    settings: Settings, store: SqliteStore
) -> None:
    store.write(write_batch(readings_of("s-1", 0, 1440, seed=16, jumps={("humidity", 60): 9.0})))
    before = run_global_anomalies(settings, store, DAY)
    flaky = FailingStore(store, writes=1)

    with pytest.raises(GlobalAnomalyRunFailed):
        run_global_anomalies(settings, flaky, DAY)

    (run,) = store.query(GlobalAnomalyRuns(DAY))
    assert run.status == RUN_FAILED
    assert run.error == "StoreError: write failed, nothing was stored: timed out"
    assert (run.series, run.anomalies) == (3, len(before.anomalies))  # as far as it got
    assert store.query(GlobalAnomalies(DAY)) == list(before.anomalies)


def test_a_failure_the_store_cannot_record_is_still_an_error(
    settings: Settings, store: SqliteStore
) -> None:
    store.close()

    with pytest.raises(
        GlobalAnomalyRunFailed, match="NOT recorded: StoreError: the store is closed"
    ):
        run_global_anomalies(settings, store, DAY)
