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
import pandas as pd

from faultline.detect.base import Detector, Scores
from faultline.detect.slots import StationSlots, grow, sensor_values, slot_rounds
from faultline.schema import STATION_ID

BAND_SIGMAS = 3.0


class BandFilterDetector(Detector):
    """Counts the readings outside mean ± 3 standard deviations of each sensor's sliding window."""

    name: ClassVar[str] = "band_filter"

    def __init__(self, sensors: Sequence[str], window: int = 60) -> None:
        super().__init__(sensors)
        if window < 3:
            raise ValueError(f"window must hold at least 3 readings, got {window}")
        self.window = window
        self._slots = StationSlots()
        m, past = len(self.sensors), window - 1
        self._past = np.zeros((0, m, past))  # ring of each sensor's last window-1 readings
        self._next = np.zeros((0, m), np.int64)  # where the ring writes next
        self._held = np.zeros((0, m), np.int64)  # readings in the ring (≤ window-1)
        self._bits = np.left_shift(np.int64(1), np.arange(m, dtype=np.int64))

    def score(self, frame: pd.DataFrame) -> Scores:
        slots = self._slots.lookup(frame[STATION_ID].to_numpy())
        return self._score(slots, sensor_values(frame, self.sensors))

    def learn(self, frame: pd.DataFrame) -> None:
        slots = self._slots.assign(frame[STATION_ID].to_numpy())
        self._ensure(len(self._slots))
        x = sensor_values(frame, self.sensors)
        for rows in slot_rounds(slots):
            self._absorb(slots[rows], x[rows])

    def process(self, frame: pd.DataFrame) -> Scores:
        # The base class's rounds, on arrays extracted once: same verdicts, no pandas per round.
        slots = self._slots.assign(frame[STATION_ID].to_numpy())
        self._ensure(len(self._slots))
        x = sensor_values(frame, self.sensors)
        out = Scores.empty(len(frame))
        for rows in slot_rounds(slots):
            got = self._score(slots[rows], x[rows])
            out.score[rows], out.is_anomaly[rows], out.sensor_mask[rows] = (
                got.score, got.is_anomaly, got.sensor_mask
            )
            self._absorb(slots[rows], x[rows])
        return out

    def _score(self, slots: np.ndarray, x: np.ndarray) -> Scores:
        """One verdict per row against the current state; slot -1 = a station never seen."""
        out = Scores.empty(len(slots))
        rows = np.flatnonzero(slots >= 0)
        if len(rows) == 0:
            return out
        s = slots[rows]
        xs = x[rows]
        values = np.concatenate([self._past[s], xs[:, :, None]], axis=2)
        mean = values.mean(axis=2, keepdims=True)
        std = values.std(axis=2, ddof=1, keepdims=True)
        count = (np.abs(values - mean) > BAND_SIGMAS * std).sum(axis=2).astype(np.float64)
        judged = (self._held[s] == self.window - 1) & ~np.isnan(xs)
        count[~judged] = np.nan
        verdict = judged.any(axis=1)
        best = np.full(len(rows), np.nan)
        best[verdict] = np.nanmax(count[verdict], axis=1)
        flagged = judged & (np.nan_to_num(count) > 1)
        out.score[rows] = best
        out.is_anomaly[rows] = flagged.any(axis=1)
        out.sensor_mask[rows] = (flagged * self._bits).sum(axis=1)
        return out

    def _absorb(self, s: np.ndarray, x: np.ndarray) -> None:
        """Push one round (distinct slots) into the rings; absent sensors are skipped."""
        r, j = np.nonzero(~np.isnan(x))
        s = s[r]
        self._past[s, j, self._next[s, j]] = x[r, j]
        self._next[s, j] = (self._next[s, j] + 1) % (self.window - 1)
        self._held[s, j] = np.minimum(self._held[s, j] + 1, self.window - 1)

    def _ensure(self, stations: int) -> None:
        self._past = grow(self._past, stations, 0.0)
        self._next = grow(self._next, stations, 0)
        self._held = grow(self._held, stations, 0)

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        chosen = self._slots.stations if stations is None else [
            s for s in stations if s in self._slots
        ]
        state = {}
        for station in chosen:
            slot = self._slots.get(station)
            state[station] = {
                name: self._chronological(slot, j).tolist()
                for j, name in enumerate(self.sensors)
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
        self._ensure(len(self._slots))
        size = self.window - 1
        for slot, sensors in zip(slots, stations.values(), strict=True):
            for j, name in enumerate(self.sensors):
                # A snapshot from a longer window keeps its most recent readings.
                kept = np.asarray(sensors.get(name, []), np.float64)[-size:]
                self._past[slot, j, : len(kept)] = kept
                self._held[slot, j] = len(kept)
                self._next[slot, j] = len(kept) % size
