"""A day of readings with an hourly cycle, for the batch job's tests."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from faultline.batch.days import day_window
from tests.contract.batches import SENSORS, reading_frame

DAY = date(2026, 3, 14)
START, END = day_window(DAY)
MINUTE = 60_000


def readings_of(
    station: str,
    first_minute: int,
    minutes: int,
    *,
    seed: int,
    jumps: dict[tuple[str, int], float] | None = None,
    per_minute: int = 3,
) -> pd.DataFrame:
    """`per_minute` readings a minute from START + first_minute: an hourly cycle plus noise,
    each (sensor, minute) in `jumps` moved by its value."""
    m = np.repeat(np.arange(first_minute, first_minute + minutes), per_minute)
    ts = START + m * MINUTE + np.tile(np.arange(per_minute) * (MINUTE // per_minute), minutes)
    rng = np.random.default_rng(seed)
    cycle = np.sin(2 * np.pi * m / 60)
    values = np.column_stack(
        [
            25 + 3 * cycle + rng.normal(0, 0.6, len(m)),
            60 - 5 * cycle + rng.normal(0, 0.9, len(m)),
            50 + rng.normal(0, 1.2, len(m)),
        ]
    )
    for (sensor, minute), jump in (jumps or {}).items():
        values[m == minute, SENSORS.index(sensor)] += jump
    return reading_frame(station, ts, values=values)
