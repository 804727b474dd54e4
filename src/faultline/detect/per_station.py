"""The frame handling shared by detectors whose state is one numpy row per station.

Such a detector only says how to judge a round of readings (at most one per station) and how to
learn it; this base turns frames into slots and value arrays once and runs the rounds, so a
round costs a few numpy operations rather than pandas calls.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import pandas as pd

from faultline.detect.base import Detector, Scores
from faultline.detect.slots import StationSlots, sensor_values, slot_rounds
from faultline.schema import STATION_ID


class PerStationDetector(Detector):
    """A detector with per-station state in the rows given by `self._slots`."""

    def __init__(self, sensors: Sequence[str]) -> None:
        super().__init__(sensors)
        self._slots = StationSlots()

    @abstractmethod
    def _judge(self, slots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score, is_anomaly, sensor_mask) of readings `x` of known `slots`, without learning."""

    @abstractmethod
    def _absorb(self, slots: np.ndarray, x: np.ndarray) -> None:
        """Learn readings `x` (NaN = absent) of distinct `slots`."""

    @abstractmethod
    def _ensure_rows(self, rows: int) -> None:
        """Make the state arrays hold at least `rows` stations."""

    @abstractmethod
    def _reset_rows(self, rows: np.ndarray) -> None:
        """Give `rows` the state of a station never seen."""

    def forget(self, stations: Sequence[str]) -> None:
        rows = self._slots.release(stations)
        if len(rows):
            self._reset_rows(rows)

    def score(self, frame: pd.DataFrame) -> Scores:
        slots = self._slots.lookup(frame[STATION_ID].to_numpy())
        return self._verdicts(slots, sensor_values(frame, self.sensors))

    def learn(self, frame: pd.DataFrame) -> None:
        slots = self._assign(frame)
        x = sensor_values(frame, self.sensors)
        for rows in slot_rounds(slots):
            self._absorb(slots[rows], x[rows])

    def process(self, frame: pd.DataFrame) -> Scores:
        # The base class's rounds, on arrays taken from the frame once: the same verdicts.
        slots = self._assign(frame)
        x = sensor_values(frame, self.sensors)
        out = Scores.empty(len(frame))
        for rows in slot_rounds(slots):
            got = self._verdicts(slots[rows], x[rows])
            out.score[rows] = got.score
            out.is_anomaly[rows] = got.is_anomaly
            out.sensor_mask[rows] = got.sensor_mask
            self._absorb(slots[rows], x[rows])
        return out

    def _verdicts(self, slots: np.ndarray, x: np.ndarray) -> Scores:
        """Scores row-aligned with `slots`; slot -1 (a station never seen) has no verdict."""
        out = Scores.empty(len(slots))
        known = np.flatnonzero(slots >= 0)
        if len(known):
            score, anomaly, mask = self._judge(slots[known], x[known])
            out.score[known] = score
            out.is_anomaly[known] = anomaly
            out.sensor_mask[known] = mask
        return out

    def _assign(self, frame: pd.DataFrame) -> np.ndarray:
        slots = self._slots.assign(frame[STATION_ID].to_numpy())
        self._ensure_rows(len(self._slots))
        return slots
