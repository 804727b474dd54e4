"""Runs the configured detectors over a batch and combines their verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from faultline.detect.base import Detector
from faultline.schema import IS_ANOMALY, MODEL_VERSION, SENSOR_MASK, score_column


class DetectorPipeline:
    """A reading is anomalous when any detector says so; the responsible sensors are pooled."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        if not detectors:
            raise ValueError("a pipeline needs at least one detector")
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        self.detectors = tuple(detectors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.detectors)

    @property
    def model_version(self) -> str:
        return ",".join(d.version for d in self.detectors if d.version)

    def replacing(self, detector: Detector) -> DetectorPipeline:
        """A pipeline of the same detectors (the same objects, so their station state goes
        along) but `detector` in place of the one of its name: the hot swap of a model."""
        if detector.name not in self.names:
            raise ValueError(f"no detector {detector.name!r} to replace in {self.names}")
        return DetectorPipeline(
            [detector if d.name == detector.name else d for d in self.detectors]
        )

    def run(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of `frame` with IS_ANOMALY, SENSOR_MASK, MODEL_VERSION and score columns."""
        n = len(frame)
        out = frame.copy()
        anomaly = np.zeros(n, bool)
        mask = np.zeros(n, np.int64)
        for detector in self.detectors:
            scores = detector.process(frame)
            out[score_column(detector.name)] = scores.score
            anomaly |= scores.is_anomaly
            mask |= np.where(scores.is_anomaly, scores.sensor_mask, 0)
        out[IS_ANOMALY] = anomaly
        out[SENSOR_MASK] = mask
        out[MODEL_VERSION] = self.model_version
        return out

    def snapshot(self) -> dict[str, Any]:
        """Every detector's state, keyed by detector name."""
        return {d.name: d.snapshot() for d in self.detectors}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Restore the detectors a snapshot names; detectors it lacks keep their state."""
        for detector in self.detectors:
            if detector.name in snapshot:
                detector.restore(snapshot[detector.name])

    def dump(self, stations: Sequence[str] | None = None) -> bytes:
        """Every detector's `dump` of `stations` (all when None): the checkpoint form of the
        state. Not compressed: zlib, even at level 1, took three to six times as long as the
        dump itself for a quarter of its size (bench/bench_state.py), and the engine waits."""
        return msgspec.msgpack.encode({d.name: d.dump(stations) for d in self.detectors})

    def load(self, data: bytes) -> None:
        """Load what `dump` gave; detectors the dump lacks keep their state. ValueError when a
        part cannot be loaded: each detector refuses its part whole, but those before it have
        loaded theirs, so a caller forgets the dump's stations to start them afresh."""
        try:
            dumps = msgspec.msgpack.decode(data, type=dict[str, bytes])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"not a detector pipeline dump: {exc}") from exc
        for detector in self.detectors:
            if detector.name in dumps:
                detector.load(dumps[detector.name])

    def forget(self, stations: Sequence[str]) -> None:
        """Every detector forgets `stations` (see Detector.forget)."""
        for detector in self.detectors:
            detector.forget(stations)
