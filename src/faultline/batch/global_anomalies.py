"""The daily job: Seasonal Hybrid ESD over each station's and sensor's 1-minute means of a day.

For every station, the job reads the day's 1-minute aggregates (faultline.batch.aggregate, kept
by the store as readings arrive), and for each sensor tests the means from the first to the last
minute with readings, short gaps filled by linear interpolation. A series too short for two
seasonal periods, or with readings in too few of its minutes for the filled gaps to be
harmless, is skipped with the reason. Anomalies are stored keyed by (day, station, sensor,
minute), so running a day again replaces its results instead of adding to them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from faultline.batch.aggregate import MEAN, MINUTE, MINUTE_MS, SENSOR
from faultline.batch.days import DAY_MS, day_window
from faultline.batch.shesd import ShesdParams, seasonal_hybrid_esd
from faultline.clock import Clock, SystemClock
from faultline.config import Settings
from faultline.schema import GlobalAnomaly, WriteBatch, empty_readings
from faultline.store import MinuteAggregates, Stations, Store

log = logging.getLogger(__name__)

MIN_COVERAGE = 0.5  # of the minutes between a series' first and last reading


@dataclass(frozen=True)
class SkippedSeries:
    station_id: str
    sensor: str
    reason: str


@dataclass(frozen=True)
class GlobalAnomalyReport:
    """What one run found: `series` analysed, their anomalies, and the series skipped."""

    day: date
    series: int
    anomalies: tuple[GlobalAnomaly, ...]
    skipped: tuple[SkippedSeries, ...]
    seconds: float

    def summary(self) -> str:
        lines = [
            f"global anomalies of {self.day.isoformat()}: {len(self.anomalies)} in "
            f"{self.series} series ({len(self.skipped)} skipped) in {self.seconds:.2f} s"
        ]
        lines += [
            f"  {a.station_id}/{a.sensor} at {_hhmm(a.minute)} UTC: {a.value:.6g} "
            f"(expected {a.expected:.6g}, score {a.score:.1f})"
            for a in self.anomalies
        ]
        lines += [f"  skipped {s.station_id}/{s.sensor}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def run_global_anomalies(
    settings: Settings,
    store: Store,
    day: date,
    *,
    params: ShesdParams | None = None,
    clock: Clock | None = None,
) -> GlobalAnomalyReport:
    """Find and store the global anomalies of the UTC day `day` (the 24 hours ending at its end).

    A day without readings gives an empty report; StoreError when the store fails.
    """
    params = params or ShesdParams()
    clock = clock or SystemClock()
    started = time.perf_counter()
    start, end = day_window(day)
    found: list[GlobalAnomaly] = []
    skipped: list[SkippedSeries] = []
    series = 0
    for station in store.query(Stations()):
        minutes = store.query(MinuteAggregates(start, end, station_id=station.station_id))
        for sensor, rows in minutes.groupby(SENSOR, sort=True):
            outcome = _series_anomalies(day, station.station_id, str(sensor), rows, params)
            if isinstance(outcome, SkippedSeries):
                skipped.append(outcome)
            else:
                series += 1
                found += outcome
    if found:
        sensors = settings.sensor_names
        store.write(
            WriteBatch(
                sensors=sensors,
                detectors=(),
                readings=empty_readings(sensors),
                processed_at=clock.now_ms(),
                global_anomalies=found,
            )
        )
    report = GlobalAnomalyReport(
        day, series, tuple(found), tuple(skipped), time.perf_counter() - started
    )
    log.info(report.summary().partition("\n")[0])
    return report


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
            f"its readings span {length} minutes; S-H-ESD needs two seasonal periods "
            f"({params.min_length} minutes)",
        )
    if len(index) < MIN_COVERAGE * length:
        return SkippedSeries(
            station_id,
            sensor,
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
