"""The store contract for global-anomaly run records and reruns, on every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from faultline.schema import RUN_FAILED, RUN_SUCCEEDED, FaultLabel, GlobalAnomaly, GlobalAnomalyRun
from faultline.store import GlobalAnomalies, GlobalAnomalyRuns, Stations, Store, StoreError
from faultline.store.aggregate import MINUTE_MS
from tests.contract.batches import T0, reading_frame, write_batch
from tests.contract.test_aggregate_contract import DAY0, DAY_MS, anomaly

DAY1 = date(2026, 1, 2)
# Millisecond precision: what every store keeps.
STARTED = datetime(2026, 1, 2, 0, 5, 0, 123_000, tzinfo=UTC)


def run_of(
    day: date,
    found: list[GlobalAnomaly],
    *,
    started: datetime = STARTED,
    series: int = 6,
    skipped: dict[str, int] | None = None,
) -> GlobalAnomalyRun:
    return GlobalAnomalyRun(
        day=day,
        started_at=started,
        finished_at=started + timedelta(seconds=2, milliseconds=456),
        status=RUN_SUCCEEDED,
        series=series,
        skipped={"too_short": 2} if skipped is None else skipped,
        anomalies=len(found),
    )


def failed_run(day: date, started: datetime = STARTED) -> GlobalAnomalyRun:
    return GlobalAnomalyRun(
        day=day,
        started_at=started,
        finished_at=started + timedelta(milliseconds=30),
        status=RUN_FAILED,
        series=2,
        skipped={},
        anomalies=0,
        error="StoreError: MinuteAggregates failed: timed out",
    )


def store_run(store: Store, run: GlobalAnomalyRun, found: list[GlobalAnomaly]) -> None:
    store.write(write_batch(global_anomalies=found, global_anomaly_run=run))


def test_a_day_never_run_has_no_record(store: Store) -> None:
    assert store.query(GlobalAnomalyRuns(DAY0)) == []
    store.write(write_batch(global_anomalies=[anomaly("a", "temperature", T0)]))

    assert store.query(GlobalAnomalyRuns(DAY0, DAY1)) == []


def test_a_run_that_found_nothing_is_recorded(store: Store) -> None:
    run = run_of(DAY0, [], series=0, skipped={"too_short": 3, "too_sparse": 1})

    store_run(store, run, [])

    assert store.query(GlobalAnomalyRuns(DAY0)) == [run]
    assert store.query(GlobalAnomalies(DAY0)) == []


def test_run_records_by_day_range(store: Store) -> None:
    first = [anomaly("a", "temperature", T0 + MINUTE_MS)]
    second = [anomaly("b", "humidity", T0 + DAY_MS, day=DAY1)]
    runs = [run_of(DAY1, second), run_of(DAY0, first, started=STARTED - timedelta(days=1))]
    store_run(store, runs[0], second)
    store_run(store, runs[1], first)

    got = store.query(GlobalAnomalyRuns(DAY0, DAY1))

    assert got == [runs[1], runs[0]]
    assert got[0].started_at.tzinfo is not None
    assert got[0].started_at.utcoffset() == timedelta(0)
    assert got[0].finished_at == STARTED - timedelta(days=1) + timedelta(seconds=2.456)
    assert store.query(GlobalAnomalyRuns(DAY1)) == [runs[0]]
    assert store.query(GlobalAnomalyRuns(DAY1, DAY0)) == []
    assert store.query(GlobalAnomalyRuns(date(2025, 12, 31))) == []
    assert store.query(GlobalAnomalies(DAY0, DAY1)) == [*first, *second]


def test_times_in_another_timezone_are_kept_as_the_same_instant(store: Store) -> None:
    local = STARTED.astimezone(timezone(timedelta(hours=5, minutes=30)))
    run = replace(run_of(DAY0, []), started_at=local, finished_at=local)

    store_run(store, run, [])

    (got,) = store.query(GlobalAnomalyRuns(DAY0))
    assert got.started_at == STARTED and got.started_at.utcoffset() == timedelta(0)


def test_a_rerun_replaces_the_days_results_and_record(store: Store) -> None:
    kept, changed, dropped = (
        anomaly("a", "temperature", T0 + 5 * MINUTE_MS),
        anomaly("a", "humidity", T0 + 9 * MINUTE_MS),
        anomaly("b", "temperature", T0 + 60 * MINUTE_MS),
    )
    other_day = [anomaly("a", "temperature", T0 + DAY_MS, day=DAY1)]
    store_run(store, run_of(DAY1, other_day), other_day)
    store_run(store, run_of(DAY0, [kept, changed, dropped]), [kept, changed, dropped])

    rerun_found = [kept, replace(changed, value=41.5, score=9.25), anomaly("c", "humidity", T0)]
    rerun = run_of(DAY0, rerun_found, started=STARTED + timedelta(hours=3), series=7)
    store_run(store, rerun, rerun_found)

    assert store.query(GlobalAnomalies(DAY0)) == sorted(
        rerun_found, key=lambda a: (a.station_id, a.sensor, a.minute)
    )
    assert store.query(GlobalAnomalies(DAY0, station_id="b")) == []
    assert store.query(GlobalAnomalyRuns(DAY0)) == [rerun]
    assert store.query(GlobalAnomalies(DAY1)) == other_day  # other days are left alone
    assert store.query(GlobalAnomalyRuns(DAY1)) == [run_of(DAY1, other_day)]


def test_a_rerun_that_finds_nothing_empties_the_day(store: Store) -> None:
    found = [anomaly("a", "temperature", T0), anomaly("b", "humidity", T0 + MINUTE_MS)]
    store_run(store, run_of(DAY0, found), found)

    rerun = run_of(DAY0, [], started=STARTED + timedelta(minutes=10))
    store_run(store, rerun, [])

    assert store.query(GlobalAnomalies(DAY0)) == []
    assert store.query(GlobalAnomalies(DAY0, station_id="a")) == []
    assert store.query(GlobalAnomalyRuns(DAY0)) == [rerun]


def test_writing_the_same_rerun_again_changes_nothing(store: Store) -> None:
    first = [anomaly("a", "temperature", T0), anomaly("b", "humidity", T0)]
    store_run(store, run_of(DAY0, first), first)
    found = [anomaly("b", "humidity", T0)]
    rerun = run_of(DAY0, found, started=STARTED + timedelta(hours=1))

    store_run(store, rerun, found)
    store_run(store, rerun, found)

    assert store.query(GlobalAnomalies(DAY0)) == found
    assert store.query(GlobalAnomalyRuns(DAY0)) == [rerun]


def test_a_failed_run_is_recorded_and_keeps_the_last_results(store: Store) -> None:
    found = [anomaly("a", "temperature", T0)]
    store_run(store, run_of(DAY0, found), found)

    failed = failed_run(DAY0, STARTED + timedelta(hours=1))
    store_run(store, failed, [])

    assert store.query(GlobalAnomalyRuns(DAY0)) == [failed]
    assert store.query(GlobalAnomalies(DAY0)) == found
    again = run_of(DAY0, [], started=STARTED + timedelta(hours=2))
    store_run(store, again, [])
    assert store.query(GlobalAnomalyRuns(DAY0)) == [again]
    assert store.query(GlobalAnomalies(DAY0)) == []


def test_a_refused_rerun_changes_nothing(store: Store) -> None:
    found = [anomaly("a", "temperature", T0)]
    store_run(store, run_of(DAY0, found), found)
    rerun = run_of(DAY0, [], started=STARTED + timedelta(hours=1))
    batch = replace(
        write_batch(reading_frame("s-1", [T0]), global_anomaly_run=rerun),
        faults=[FaultLabel("s-1", "humidity", "drift", T0 + 5000, T0 + 4000)],
    )

    with pytest.raises(StoreError):
        store.write(batch)

    assert store.query(GlobalAnomalies(DAY0)) == found
    assert store.query(GlobalAnomalyRuns(DAY0)) == [run_of(DAY0, found)]
    assert store.query(Stations()) == []


NAIVE = datetime(2026, 1, 2, 0, 5)


@pytest.mark.parametrize(
    ("bad", "found", "message"),
    [
        (replace(run_of(DAY0, []), started_at=NAIVE), [], "started_at must be a timezone-aware"),
        (replace(run_of(DAY0, []), finished_at=NAIVE), [], "finished_at must be a timezone-aware"),
        (
            replace(run_of(DAY0, []), finished_at=STARTED - timedelta(seconds=1)),
            [],
            "is before started_at",
        ),
        (replace(run_of(DAY0, []), status="done"), [], "status must be 'succeeded' or 'failed'"),
        (replace(run_of(DAY0, []), series=-1), [], "series must be a whole number >= 0"),
        (replace(run_of(DAY0, []), skipped={"": 1}), [], "skip reasons must be non-empty str"),
        (replace(run_of(DAY0, []), skipped={"x": 1.5}), [], r"skipped\['x'\] must be a whole"),
        (replace(run_of(DAY0, []), error="oops"), [], "a succeeded run has no error"),
        (run_of(DAY0, []), [anomaly("a", "temperature", T0)], "counts 0 anomalies but the batch"),
        (
            run_of(DAY0, [anomaly("a", "temperature", T0)]),
            [anomaly("a", "temperature", T0 + DAY_MS, day=DAY1)],
            "carries a global anomaly of 2026-01-02",
        ),
        (replace(failed_run(DAY0), error=None), [], "a failed run must say why"),
        (
            replace(failed_run(DAY0), anomalies=1),
            [anomaly("a", "temperature", T0)],
            "a failed run stores no global anomalies",
        ),
    ],
)
def test_a_bad_run_record_stores_nothing(
    store: Store, bad: GlobalAnomalyRun, found: list[GlobalAnomaly], message: str
) -> None:
    batch = write_batch(reading_frame("s-1", [T0]), global_anomalies=found, global_anomaly_run=bad)

    with pytest.raises(StoreError, match=message):
        store.write(batch)

    assert store.query(Stations()) == []
    assert store.query(GlobalAnomalies(DAY0, DAY1)) == []
    assert store.query(GlobalAnomalyRuns(DAY0, DAY1)) == []
