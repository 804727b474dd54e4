"""The daily job over a real SQLite store filled with a day of readings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faultline.batch.global_anomalies import run_global_anomalies
from faultline.batch.shesd import ShesdParams
from faultline.clock import ManualClock
from faultline.config import Settings, load_settings
from faultline.store import GlobalAnomalies, SqliteStore, StoreError
from tests.batch.readings import DAY, END, MINUTE, START, readings_of
from tests.contract.batches import SENSORS, write_batch


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
    assert "0 in 0 series" in report.summary()


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
    assert "skipped short/humidity: its readings span 90 minutes" in report.summary()


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


def test_a_failing_store_is_an_error(settings: Settings, store: SqliteStore) -> None:
    store.close()

    with pytest.raises(StoreError, match="closed"):
        run_global_anomalies(settings, store, DAY)
