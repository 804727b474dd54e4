"""Single-station reading frames for detector tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from faultline.schema import RECEIVED_AT, SEQ, STATION_ID, TS, TS_ASSIGNED


def station_frame(
    values: Mapping[str, Sequence[float] | np.ndarray], station: str = "s1"
) -> pd.DataFrame:
    """One reading per second of `station`, one column per sensor."""
    n = len(next(iter(values.values())))
    ts = 1_767_225_600_000 + np.arange(n, dtype=np.int64) * 1000
    frame = pd.DataFrame(
        {
            STATION_ID: np.full(n, station, dtype=object),
            TS: ts,
            SEQ: np.arange(n, dtype=np.int64),
            TS_ASSIGNED: np.zeros(n, bool),
            RECEIVED_AT: ts,
        }
    )
    for name, column in values.items():
        frame[name] = np.asarray(column, np.float64)
    return frame
