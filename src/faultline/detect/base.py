"""The detector protocol.

A detector turns a batch of readings into scores. **Higher score = more anomalous.** A NaN score
means "no verdict": the detector has not seen enough of that station yet (warming up) or the
reading lacks a sensor it needs. That is a state, never an anomaly.

Detectors are engine-agnostic: they see pandas frames in the layout of `faultline.schema`, keep
their per-station state explicitly, and can `snapshot` and `restore` it, so the in-process engine
and the Spark job run the same code. `dump` and `load` carry the same state as bytes, for the
engine's frequent checkpoints, where plain lists would cost more than detection itself.
`forget` drops stations, so the state of long-silent ones does not grow without bound.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import numpy as np
import pandas as pd

from faultline.schema import STATION_ID


@dataclass(frozen=True)
class Scores:
    """One detector's output for a batch, row-aligned with it.

    `learning` marks readings the detector scored while it is still calibrating the station:
    the score ranks them, but the detector withholds its verdict (never anomalous), as it does
    for the NaN of its warm-up. None: no reading is.
    """

    score: np.ndarray  # float64; NaN = no verdict
    is_anomaly: np.ndarray  # bool; False wherever score is NaN or learning
    sensor_mask: np.ndarray  # int64; bit i = sensor i of the configured order is responsible
    learning: np.ndarray | None = None  # bool, or None

    @staticmethod
    def empty(n: int) -> Scores:
        return Scores(np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, np.int64))

    @property
    def judged(self) -> np.ndarray:
        """Where the detector gave a verdict: a score, and no longer learning."""
        judged = ~np.isnan(self.score)
        return judged if self.learning is None else judged & ~self.learning


class Detector(ABC):
    """Scores readings of the configured sensors; higher = more anomalous; NaN = no verdict."""

    name: ClassVar[str]

    def __init__(self, sensors: Sequence[str]) -> None:
        self.sensors = tuple(sensors)

    @property
    def version(self) -> str:
        """The model version behind the scores ("" when the detector has no trained model)."""
        return ""

    @abstractmethod
    def score(self, frame: pd.DataFrame) -> Scores:
        """Score every row against the current state, without changing it."""

    @abstractmethod
    def learn(self, frame: pd.DataFrame) -> None:
        """Update the state with these rows, in order."""

    @abstractmethod
    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        """The state of `stations` (all when None) as plain lists, dicts, numbers and strings."""

    @abstractmethod
    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load a snapshot; stations it names replace their current state, others stay."""

    @abstractmethod
    def forget(self, stations: Sequence[str]) -> None:
        """Drop the state of `stations`: afterwards each behaves exactly like a station never
        seen (warming up from its next reading); stations not known are ignored."""

    def dump(self, stations: Sequence[str] | None = None) -> bytes:
        """`snapshot(stations)` as bytes for `load`; detectors with large state override both
        with a binary layout."""
        return msgspec.msgpack.encode(self.snapshot(stations))

    def load(self, data: bytes) -> None:
        """Restore what `dump` gave, as `restore` does; ValueError when `data` is not a dump
        of this detector's state."""
        try:
            snapshot = msgspec.msgpack.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a {self.name} dump: {exc}") from exc
        if not isinstance(snapshot, dict):
            raise ValueError(f"not a {self.name} dump: {type(snapshot).__name__}")
        try:
            self.restore(snapshot)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed {self.name} dump: {exc!r}") from exc

    def process(self, frame: pd.DataFrame) -> Scores:
        """Score each reading using only what came before it, then learn it.

        Rows of one station are taken in order; rows of different stations in the same round
        are vectorised together, so a live batch (about one reading per station) is one round.
        """
        n = len(frame)
        if n == 0:
            return Scores.empty(0)
        out = Scores.empty(n)
        learning = np.zeros(n, bool)
        for rows in rounds(frame):
            part = frame.iloc[rows]
            scored = self.score(part)
            out.score[rows] = scored.score
            out.is_anomaly[rows] = scored.is_anomaly
            out.sensor_mask[rows] = scored.sensor_mask
            if scored.learning is not None:
                learning[rows] = scored.learning
            self.learn(part)
        return Scores(out.score, out.is_anomaly, out.sensor_mask, learning)


def rounds(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row positions split so that each part holds at most one row per station, in order."""
    occurrence = frame.groupby(STATION_ID, sort=False).cumcount().to_numpy()
    if len(occurrence) == 0:
        return []
    top = int(occurrence.max())
    if top == 0:
        return [np.arange(len(frame))]
    order = np.argsort(occurrence, kind="stable")
    bounds = np.searchsorted(occurrence[order], np.arange(1, top + 1))
    return np.split(order, bounds)
