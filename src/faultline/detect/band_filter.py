"""Seed 003's windowed band filter, reproduced as a baseline.

The seed's design: a reading is out of band when it lies outside the mean ± 3 standard deviations
of its window, and a window is anomalous when more than one of its readings is out of band. Here
the window of a reading is that reading and the `window - 1` readings of the same sensor before
it, so each reading is judged as soon as it arrives, using only the past. The score is the number
of out-of-band readings in the window (the seed's own statistic); the reading is anomalous when
that number exceeds one. A sensor has no verdict (NaN) until its window is full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from faultline.detect.per_station import PerStationDetector
from faultline.detect.slots import grow

BAND_SIGMAS = 3.0


class BandFilterDetector(PerStationDetector):
    """Counts the readings outside mean ± 3 standard deviations of each sensor's sliding window."""

    name: ClassVar[str] = "band_filter"

    def __init__(self, sensors: Sequence[str], window: int = 60) -> None:
        super().__init__(sensors)
        if window < 3:
            raise ValueError(f"window must hold at least 3 readings, got {window}")
        self.window = window
        m, past = len(self.sensors), window - 1
        self._past = np.zeros((0, m, past))  # ring of each sensor's last window-1 readings
        self._next = np.zeros((0, m), np.int64)  # where the ring writes next
        self._held = np.zeros((0, m), np.int64)  # readings in the ring (≤ window-1)
        self._bits = np.left_shift(np.int64(1), np.arange(m, dtype=np.int64))

    def _judge(self, s: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each reading with the past `window - 1` of its sensor: the out-of-band count."""
        values = np.concatenate([self._past[s], xs[:, :, None]], axis=2)
        mean = values.mean(axis=2, keepdims=True)
        std = values.std(axis=2, ddof=1, keepdims=True)
        count = (np.abs(values - mean) > BAND_SIGMAS * std).sum(axis=2).astype(np.float64)
        judged = (self._held[s] == self.window - 1) & ~np.isnan(xs)
        count[~judged] = np.nan
        verdict = judged.any(axis=1)
        best = np.full(len(s), np.nan)
        best[verdict] = np.nanmax(count[verdict], axis=1)
        flagged = judged & (np.nan_to_num(count) > 1)
        return best, flagged.any(axis=1), flagged @ self._bits

    def _absorb(self, s: np.ndarray, x: np.ndarray) -> None:
        """Push one round (distinct slots) into the rings; absent sensors are skipped."""
        r, j = np.nonzero(~np.isnan(x))
        s = s[r]
        self._past[s, j, self._next[s, j]] = x[r, j]
        self._next[s, j] = (self._next[s, j] + 1) % (self.window - 1)
        self._held[s, j] = np.minimum(self._held[s, j] + 1, self.window - 1)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._past[rows] = 0.0
        self._next[rows] = 0
        self._held[rows] = 0

    def _ensure_rows(self, stations: int) -> None:
        self._past = grow(self._past, stations, 0.0)
        self._next = grow(self._next, stations, 0)
        self._held = grow(self._held, stations, 0)

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        state = {}
        for station in self._slots.known(stations):
            slot = self._slots.get(station)
            state[station] = {
                name: self._chronological(slot, j).tolist() for j, name in enumerate(self.sensors)
            }
        return {"window": self.window, "stations": state}

    def _chronological(self, slot: int, j: int) -> np.ndarray:
        held, nxt, size = self._held[slot, j], self._next[slot, j], self.window - 1
        ring = self._past[slot, j]
        if held < size:
            return ring[:held].copy()
        return np.r_[ring[nxt:], ring[:nxt]]

    def restore(self, snapshot: dict[str, Any]) -> None:
        stations: dict[str, dict[str, list[float]]] = snapshot["stations"]
        for station, sensors in stations.items():
            unknown = set(sensors) - set(self.sensors)
            if unknown:
                raise ValueError(f"snapshot of {station!r} has unknown sensors {sorted(unknown)}")
        slots = self._slots.assign(np.array(list(stations), dtype=object))
        self._ensure_rows(len(self._slots))
        size = self.window - 1
        for slot, sensors in zip(slots, stations.values(), strict=True):
            for j, name in enumerate(self.sensors):
                # A snapshot from a longer window keeps its most recent readings.
                kept = np.asarray(sensors.get(name, []), np.float64)[-size:]
                self._past[slot, j, : len(kept)] = kept
                self._held[slot, j] = len(kept)
                self._next[slot, j] = len(kept) % size
