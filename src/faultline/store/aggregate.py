"""1-minute aggregates of readings: partials of a batch, merged into what a store keeps.

Count, sum, min and max merge exactly whatever the order and grouping of the batches a minute's
readings came in, so a store keeps those four and derives the mean (sum / count) when asked.
A store must fold in the partials of the readings it actually inserted, never of a whole batch,
or a replayed batch would be counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from faultline.schema import STATION_ID, TS

MINUTE_MS = 60_000
SENSOR = "sensor"
MINUTE = "minute"  # epoch ms at which the minute starts
COUNT = "count"
SUM = "sum"
MIN = "min"
MAX = "max"
MEAN = "mean"
PARTIAL_COLUMNS: tuple[str, ...] = (STATION_ID, SENSOR, MINUTE, COUNT, SUM, MIN, MAX)
AGGREGATE_COLUMNS: tuple[str, ...] = (*PARTIAL_COLUMNS, MEAN)

Partial = tuple[int, float, float, float]  # count, sum, min, max
AggregateRow = tuple[str, str, int, int, float, float, float]  # in PARTIAL_COLUMNS order


def minute_start(ts: np.ndarray) -> np.ndarray:
    """The epoch ms each minute starts at, for int64 epoch-ms times (floored, also before 1970)."""
    return ts // MINUTE_MS * MINUTE_MS


def minute_partials(readings: pd.DataFrame, sensors: Sequence[str]) -> pd.DataFrame:
    """Count, sum, min and max of each sensor's values per station and minute.

    `readings` needs station_id, ts (epoch ms) and the float columns `sensors`; NaN (a sensor the
    station does not carry) counts for nothing. The result has PARTIAL_COLUMNS, sorted by
    (station_id, sensor, minute), one row per combination that has at least one value.
    """
    values = readings[list(sensors)].to_numpy(dtype=np.float64, na_value=np.nan)
    rows, cols = np.nonzero(~np.isnan(values))
    if len(rows) == 0:
        return _typed(pd.DataFrame({name: [] for name in PARTIAL_COLUMNS}))
    # One int64 group code per value, (station, sensor, minute) in the order the result sorts
    # by: station codes follow sorted station ids, so sorting the codes sorts the groups.
    codes, uniques = pd.factorize(readings[STATION_ID].to_numpy(dtype=object), sort=True)
    stations, station_code = np.asarray(uniques, dtype=object), codes[rows].astype(np.int64)
    order_of_sensor = np.argsort(np.asarray(sensors, dtype=object))
    sensor_rank = np.empty(len(sensors), np.int64)
    sensor_rank[order_of_sensor] = np.arange(len(sensors))
    minutes = minute_start(readings[TS].to_numpy(dtype=np.int64))[rows]
    first_minute = minutes.min()
    span = (minutes.max() - first_minute) // MINUTE_MS + 1
    code = (station_code * len(sensors) + sensor_rank[cols]) * span + (
        minutes - first_minute
    ) // MINUTE_MS
    order = np.argsort(code, kind="stable")
    code, picked = code[order], values[rows, cols][order]
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    group = code[starts]
    names = np.asarray(sensors, dtype=object)[order_of_sensor]
    return pd.DataFrame(
        {
            STATION_ID: pd.Series(stations[group // (len(sensors) * span)], dtype=object),
            SENSOR: pd.Series(names[group // span % len(sensors)], dtype=object),
            MINUTE: first_minute + group % span * MINUTE_MS,
            COUNT: np.diff(np.r_[starts, len(code)]).astype(np.int64),
            SUM: np.add.reduceat(picked, starts),
            MIN: np.minimum.reduceat(picked, starts),
            MAX: np.maximum.reduceat(picked, starts),
        }
    )


def anomaly_minutes(ts: np.ndarray, is_anomaly: np.ndarray) -> list[tuple[int, int]]:
    """(minute, anomalous readings) of the readings at `ts` (epoch ms) flagged by the boolean
    `is_anomaly`, one per minute that has any, by minute: what a store adds to the anomaly
    counts it answers AnomalyCount from."""
    minutes, counts = np.unique(minute_start(ts[is_anomaly]), return_counts=True)
    return list(zip(minutes.tolist(), counts.tolist(), strict=True))


def partial_rows(partials: pd.DataFrame) -> list[AggregateRow]:
    """A minute_partials frame as plain tuples, for drivers and dicts."""
    return list(
        zip(
            partials[STATION_ID].tolist(),
            partials[SENSOR].tolist(),
            partials[MINUTE].tolist(),
            partials[COUNT].tolist(),
            partials[SUM].tolist(),
            partials[MIN].tolist(),
            partials[MAX].tolist(),
            strict=True,
        )
    )


def merge_partial(old: Partial | None, new: Partial) -> Partial:
    """The aggregate of two disjoint sets of readings of one minute (`old` None: no readings)."""
    if old is None:
        return new
    return (old[0] + new[0], old[1] + new[1], min(old[2], new[2]), max(old[3], new[3]))


def aggregate_frame(rows: Iterable[AggregateRow]) -> pd.DataFrame:
    """The MinuteAggregates result: rows in PARTIAL_COLUMNS order, sorted, with their mean."""
    frame = _typed(pd.DataFrame.from_records(list(rows), columns=list(PARTIAL_COLUMNS)))
    frame = frame.sort_values([STATION_ID, SENSOR, MINUTE], kind="stable", ignore_index=True)
    frame[MEAN] = frame[SUM] / frame[COUNT]
    return frame


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {
            STATION_ID: object,
            SENSOR: object,
            MINUTE: np.int64,
            COUNT: np.int64,
            SUM: np.float64,
            MIN: np.float64,
            MAX: np.float64,
        }
    )
