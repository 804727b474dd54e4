"""Minute partials: checked against a plain per-value loop, and merged in any grouping."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from faultline.schema import STATION_ID, TS
from faultline.store.aggregate import (
    MINUTE_MS,
    PARTIAL_COLUMNS,
    aggregate_frame,
    merge_partial,
    minute_partials,
    minute_start,
    partial_rows,
)

SENSORS = ("temperature", "humidity", "noise_level")  # not in sorted order on purpose


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    readings = pd.DataFrame(
        {
            STATION_ID: pd.Series(rng.choice(["b", "a", "c-ü"], n), dtype=object),
            TS: rng.integers(-3 * MINUTE_MS, 5 * MINUTE_MS, n),  # before and after 1970
        }
    )
    values = rng.normal(20, 5, (n, len(SENSORS)))
    values[rng.random(values.shape) < 0.2] = np.nan
    for j, name in enumerate(SENSORS):
        readings[name] = values[:, j]
    return readings


def by_loop(readings: pd.DataFrame) -> list[tuple[object, ...]]:
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for row in readings.itertuples(index=False):
        for name in SENSORS:
            value = getattr(row, name)
            if not math.isnan(value):
                groups[(row.station_id, name, math.floor(row.ts / MINUTE_MS) * MINUTE_MS)].append(
                    value
                )
    return [(*key, len(v), math.fsum(v), min(v), max(v)) for key, v in sorted(groups.items())]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partials_match_a_plain_loop(seed: int) -> None:
    readings = frame(500, seed)

    got = partial_rows(minute_partials(readings, SENSORS))

    wanted = by_loop(readings)
    assert [row[:4] for row in got] == [row[:4] for row in wanted]
    for mine, theirs in zip(got, wanted, strict=True):
        assert mine[4:] == pytest.approx(theirs[4:], rel=1e-12)


def test_partials_merged_in_any_grouping_equal_the_whole() -> None:
    readings = frame(900, 5)
    merged: dict[tuple[str, str, int], tuple[int, float, float, float]] = {}
    shuffled = readings.sample(frac=1, random_state=1)
    for part in (shuffled.iloc[i : i + 130] for i in range(0, len(shuffled), 130)):
        for station, sensor, minute, n, total, low, high in partial_rows(
            minute_partials(part, SENSORS)
        ):
            key = (station, sensor, minute)
            merged[key] = merge_partial(merged.get(key), (n, total, low, high))

    whole = aggregate_frame(partial_rows(minute_partials(readings, SENSORS)))
    again = aggregate_frame((*key, *partial) for key, partial in merged.items())

    pd.testing.assert_frame_equal(again, whole, check_exact=False, rtol=1e-12)
    assert (whole["mean"] == whole["sum"] / whole["count"]).all()


def test_no_values_give_an_empty_typed_frame() -> None:
    readings = frame(10, 3)
    readings[list(SENSORS)] = np.nan

    got = minute_partials(readings, SENSORS)

    assert got.empty and tuple(got.columns) == PARTIAL_COLUMNS
    assert str(got["minute"].dtype) == "int64" and str(got["sum"].dtype) == "float64"


def test_minutes_are_floored_also_before_1970() -> None:
    ts = np.array([-1, 0, 59_999, 60_000, -60_000, -60_001], dtype=np.int64)
    assert minute_start(ts).tolist() == [-60_000, 0, 0, 60_000, -60_000, -120_000]
