"""Per-station state in numpy arrays: station slots, growth, and rounds without pandas.

Detectors keep each station's state in a row of numpy arrays and turn a frame into arrays once,
so a round of readings (at most one per station) costs a few numpy operations, not pandas calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class StationSlots:
    """Gives each station a stable row in the state arrays of one detector.

    Rows of released (forgotten) stations are given to new stations first, so the arrays stay
    as large as the most stations held at once. Arrays never shrink, and a row past all others
    is taken only when no released one is left, so growing them to len(self) rows suffices.
    """

    def __init__(self) -> None:
        self._slots: dict[str, int] = {}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, station: object) -> bool:
        return station in self._slots

    @property
    def stations(self) -> list[str]:
        return list(self._slots)

    def lookup(self, stations: np.ndarray) -> np.ndarray:
        """Each station's row, -1 for stations never assigned (reading never changes state)."""
        get = self._slots.get
        return np.fromiter((get(s, -1) for s in stations), np.int64, len(stations))

    def assign(self, stations: np.ndarray) -> np.ndarray:
        """Each station's row, giving new stations the next free rows."""
        slots, free = self._slots, self._free
        for s in stations:
            if s not in slots:
                slots[s] = free.pop() if free else len(slots)
        return np.fromiter((slots[s] for s in stations), np.int64, len(stations))

    def release(self, stations: Sequence[str]) -> np.ndarray:
        """Forget `stations` (those never assigned are ignored); the rows they held, whose
        state the owner must reset to a new station's."""
        rows = [self._slots.pop(s) for s in stations if s in self._slots]
        self._free.extend(rows)
        return np.array(rows, np.int64)

    def get(self, station: str) -> int:
        return self._slots[station]

    def known(self, stations: Sequence[str] | None = None) -> list[str]:
        """`stations` that have a slot, in the order given; every station when None."""
        if stations is None:
            return list(self._slots)
        return [s for s in stations if s in self._slots]


def grow(array: np.ndarray, rows: int, fill: float | int | bool) -> np.ndarray:
    """`array` with at least `rows` rows along axis 0, new rows set to `fill` (doubling)."""
    if array.shape[0] >= rows:
        return array
    new = np.full((max(rows, 2 * array.shape[0]), *array.shape[1:]), fill, array.dtype)
    new[: array.shape[0]] = array
    return new


def slot_rounds(slots: np.ndarray) -> list[np.ndarray]:
    """`faultline.detect.rounds` for integer station slots, without pandas.

    Positions split so that each part holds at most one position per slot, in order.
    """
    n = len(slots)
    if n == 0:
        return []
    by_slot = np.argsort(slots, kind="stable")
    sorted_slots = slots[by_slot]
    starts = np.r_[True, sorted_slots[1:] != sorted_slots[:-1]]
    run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    occurrence = np.empty(n, np.int64)
    occurrence[by_slot] = np.arange(n) - run_start
    top = int(occurrence.max())
    if top == 0:
        return [np.arange(n)]
    order = np.argsort(occurrence, kind="stable")
    bounds = np.searchsorted(occurrence[order], np.arange(1, top + 1))
    return np.split(order, bounds)


def sensor_values(frame: pd.DataFrame, sensors: Sequence[str]) -> np.ndarray:
    """The sensor columns as a float (rows, sensors) array.

    NaN where a sensor is absent, its column is missing, or its value is not finite: a reading
    of ±inf cannot be scored or learned, so it is treated as a reading the sensor did not send.
    """
    out = np.full((len(frame), len(sensors)), np.nan)
    for j, name in enumerate(sensors):
        if name in frame.columns:
            out[:, j] = frame[name].to_numpy(np.float64, na_value=np.nan)
    out[np.isinf(out)] = np.nan
    return out
