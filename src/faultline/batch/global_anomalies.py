"""The daily job: Seasonal Hybrid ESD over each station's and sensor's 1-minute means of a day.

For every station, the job reads the day's 1-minute aggregates (faultline.store.aggregate, kept
by the store as readings arrive), and for each sensor tests the means from the first to the last
minute with readings, short gaps filled by linear interpolation. A series too short for two
seasonal periods, or with readings in too few of its minutes for the filled gaps to be
harmless, is skipped with the reason.

Every run, succeeded or failed, is stored as the day's run record (faultline.schema.
GlobalAnomalyRun), so a day never run can be told from a day without anomalies. A succeeded
run's anomalies are written with its record in one store write that replaces the day's earlier
results, so running a day again leaves exactly what the new run found. A failed run records
why and leaves the day's results as the last succeeded run stored them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import numpy as np
import pandas as pd

from faultline.batch.days import DAY_MS, day_window
from faultline.batch.shesd import ShesdParams, seasonal_hybrid_esd
from faultline.clock import Clock, SystemClock, datetime_to_ms, iso_ms, ms_to_datetime
from faultline.config import Settings
from faultline.schema import (
    RUN_FAILED,
    RUN_SUCCEEDED,
    GlobalAnomaly,
    GlobalAnomalyRun,
    RunStatus,
    WriteBatch,
    empty_readings,
)
from faultline.store import MinuteAggregates, Stations, Store
from faultline.store.aggregate import MEAN, MINUTE, MINUTE_MS, SENSOR

log = logging.getLogger(__name__)

MIN_COVERAGE = 0.5  # of the minutes between a series' first and last reading
# Why a series was skipped, as the run record counts them.
TOO_SHORT = "too_short"
TOO_SPARSE = "too_sparse"


@dataclass(frozen=True)
class SkippedSeries:
    station_id: str
    sensor: str
    kind: str  # TOO_SHORT or TOO_SPARSE
    reason: str


@dataclass(frozen=True)
class GlobalAnomalyReport:
    """One run: its record as stored, the anomalies it found and the series it skipped.

    `not_recorded` says why the store did not take the record of a failed run (None: it did;
    a succeeded run's record is always stored, or the run would have failed).
    """

    run: GlobalAnomalyRun
    anomalies: tuple[GlobalAnomaly, ...]
    skipped: tuple[SkippedSeries, ...]
    not_recorded: str | None = None

    @property
    def day(self) -> date:
        return self.run.day

    @property
    def series(self) -> int:
        return self.run.series

    def summary(self) -> str:
        """What the run record says, then the stored anomalies and the skipped series, one a
        line."""
        run = self.run
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(run.skipped.items()))
        counts = (
            f"{run.anomalies} anomalies in {run.series} series, "
            f"{sum(run.skipped.values())} skipped" + (f" ({reasons})" if reasons else "")
        )
        head = f"global anomalies of {run.day.isoformat()}: "
        if run.status == RUN_SUCCEEDED:
            head += f"succeeded, {counts}"
        else:
            head += f"failed: {run.error}; before that, {counts}"
        seconds = (run.finished_at - run.started_at).total_seconds()
        stored = "recorded" if self.not_recorded is None else f"NOT recorded: {self.not_recorded}"
        lines = [
            head,
            f"  run from {_iso(run.started_at)} to {_iso(run.finished_at)} "
            f"({seconds:.2f} s), {stored}",
        ]
        lines += [
            f"  {a.station_id}/{a.sensor} at {_hhmm(a.minute)} UTC: {a.value:.6g} "
            f"(expected {a.expected:.6g}, score {a.score:.1f})"
            for a in self.anomalies
            if run.status == RUN_SUCCEEDED  # a failed run stored none of them
        ]
        lines += [f"  skipped {s.station_id}/{s.sensor}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


class GlobalAnomalyRunFailed(Exception):
    """A run failed; `report` holds its failed record and whether the store took it."""

    def __init__(self, report: GlobalAnomalyReport) -> None:
        super().__init__("; ".join(line.strip() for line in report.summary().split("\n")[:2]))
        self.report = report


@dataclass
class _Tally:
    """What a run has done so far: what its record says when it ends, however it ends."""

    series: int = 0
    found: list[GlobalAnomaly] = field(default_factory=list)
    skipped: list[SkippedSeries] = field(default_factory=list)

    def report(
        self,
        day: date,
        started: datetime,
        finished: datetime,
        status: RunStatus,
        error: str | None = None,
    ) -> GlobalAnomalyReport:
        run = GlobalAnomalyRun(
            day=day,
            started_at=started,
            finished_at=finished,
            status=status,
            series=self.series,
            skipped=dict(Counter(s.kind for s in self.skipped)),
            anomalies=len(self.found),
            error=error,
        )
        return GlobalAnomalyReport(run, tuple(self.found), tuple(self.skipped))


def run_global_anomalies(
    settings: Settings,
    store: Store,
    day: date,
    *,
    params: ShesdParams | None = None,
    clock: Clock | None = None,
) -> GlobalAnomalyReport:
    """Find the global anomalies of the UTC day `day` (the 24 hours ending at its end) and
    store them with the run's record, in place of the day's earlier results.

    A day without readings is a succeeded run that found nothing. When anything fails (the
    store, the analysis), the failure is recorded as the day's run if the store still takes a
    write, and GlobalAnomalyRunFailed is raised from the original error.
    """
    params = params or ShesdParams()
    clock = clock or SystemClock()
    started = ms_to_datetime(clock.now_ms())
    tally = _Tally()
    try:
        _analyse(store, day, params, tally)
        report = tally.report(day, started, ms_to_datetime(clock.now_ms()), RUN_SUCCEEDED)
        store.write(_run_batch(settings, clock, report))
    except Exception as exc:
        failed = tally.report(
            day, started, ms_to_datetime(clock.now_ms()), RUN_FAILED, f"{type(exc).__name__}: {exc}"
        )
        try:
            store.write(_run_batch(settings, clock, failed))
        except Exception as unrecorded:
            failed = replace(failed, not_recorded=f"{type(unrecorded).__name__}: {unrecorded}")
        log.error("%s", failed.summary().partition("\n")[0])
        raise GlobalAnomalyRunFailed(failed) from exc
    log.info("%s", report.summary().partition("\n")[0])
    return report


def _analyse(store: Store, day: date, params: ShesdParams, tally: _Tally) -> None:
    start, end = day_window(day)
    for station in store.query(Stations()):
        minutes = store.query(MinuteAggregates(start, end, station_id=station.station_id))
        for sensor, rows in minutes.groupby(SENSOR, sort=True):
            outcome = _series_anomalies(day, station.station_id, str(sensor), rows, params)
            if isinstance(outcome, SkippedSeries):
                tally.skipped.append(outcome)
            else:
                tally.series += 1
                tally.found += outcome


def _run_batch(settings: Settings, clock: Clock, report: GlobalAnomalyReport) -> WriteBatch:
    """The store write of a run: its record, and a succeeded run's anomalies."""
    sensors = settings.sensor_names
    return WriteBatch(
        sensors=sensors,
        detectors=(),
        readings=empty_readings(sensors),
        processed_at=clock.now_ms(),
        global_anomalies=report.anomalies if report.run.status == RUN_SUCCEEDED else (),
        global_anomaly_run=report.run,
    )


def _series_anomalies(
    day: date, station_id: str, sensor: str, rows: pd.DataFrame, params: ShesdParams
) -> list[GlobalAnomaly] | SkippedSeries:
    start = day_window(day)[0]
    index = (rows[MINUTE].to_numpy(dtype=np.int64) - start) // MINUTE_MS
    means = rows[MEAN].to_numpy(dtype=np.float64)
    first, last = int(index.min()), int(index.max())
    length = last - first + 1
    if length < params.min_length:
        return SkippedSeries(
            station_id,
            sensor,
            TOO_SHORT,
            f"its readings span {length} minutes; S-H-ESD needs two seasonal periods "
            f"({params.min_length} minutes)",
        )
    if len(index) < MIN_COVERAGE * length:
        return SkippedSeries(
            station_id,
            sensor,
            TOO_SPARSE,
            f"only {len(index)} of the {length} minutes from its first reading to its last "
            f"have readings; at least {MIN_COVERAGE:.0%} are needed to fill the gaps",
        )
    grid = np.arange(first, last + 1)
    result = seasonal_hybrid_esd(np.interp(grid, index, means), params)
    observed = np.zeros(length, bool)
    observed[index - first] = True
    value_at = dict(zip(index.tolist(), means.tolist(), strict=True))
    return [
        GlobalAnomaly(
            day=day,
            station_id=station_id,
            sensor=sensor,
            minute=start + (first + int(p)) * MINUTE_MS,
            value=value_at[first + int(p)],
            expected=float(result.expected[p]),
            score=float(score),
        )
        for p, score in zip(result.positions, result.scores, strict=True)
        if observed[p]  # a filled-in minute had no readings to be anomalous
    ]


def _hhmm(minute_ms: int) -> str:
    of_day = minute_ms % DAY_MS // MINUTE_MS
    return f"{of_day // 60:02d}:{of_day % 60:02d}"


def _iso(moment: datetime) -> str:
    return iso_ms(datetime_to_ms(moment))
