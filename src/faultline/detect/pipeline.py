"""Runs the configured detectors over a batch and combines their verdicts.

A reading is anomalous when any detector flags it, and its responsible sensors are those of the
detectors that flagged it; but a station whose first detector (the streaming one, which learns
the station) has no verdict yet, or is still calibrating (`Scores.learning`), is still learning,
and then the set gives none either: a model
fitted elsewhere must not raise alarms about a station nobody has learned yet.
`DetectorPipeline` writes the result into the batch (the engines), `Ensemble` is the same set
as one `Detector` (`faultline eval` measures the deployed set through it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import numpy as np
import pandas as pd

from faultline.detect.base import Detector, Scores
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
        out = frame.copy()
        each = [detector.process(frame) for detector in self.detectors]
        for detector, scores in zip(self.detectors, each, strict=True):
            out[score_column(detector.name)] = scores.score
        pooled = pool(each)
        out[IS_ANOMALY] = pooled.is_anomaly
        out[SENSOR_MASK] = pooled.sensor_mask
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


def pool(each: Sequence[Scores]) -> Scores:
    """The verdict of a set of detectors (module docstring): the first one's score, any one's
    flag where the first has a verdict, the responsible sensors of those that flagged."""
    first = each[0]
    learned = first.judged
    anomaly = np.zeros(len(first.score), bool)
    mask = np.zeros(len(first.score), np.int64)
    for scores in each:
        flagged = scores.is_anomaly & learned
        anomaly |= flagged
        mask |= np.where(flagged, scores.sensor_mask, 0)
    learning = None if first.learning is None else first.learning.copy()
    return Scores(first.score.copy(), anomaly, mask, learning)


class Ensemble(Detector):
    """A pipeline's detectors as one detector: `pool` of their scores, their state together."""

    name: ClassVar[str] = "deployed"

    def __init__(self, detectors: Sequence[Detector]) -> None:
        if not detectors:
            raise ValueError("an ensemble needs at least one detector")
        super().__init__(detectors[0].sensors)
        if any(d.sensors != self.sensors for d in detectors):
            raise ValueError("the detectors of an ensemble must judge the same sensors")
        self.members = DetectorPipeline(detectors).detectors

    @property
    def version(self) -> str:
        return ",".join(d.version for d in self.members if d.version)

    def score(self, frame: pd.DataFrame) -> Scores:
        return pool([d.score(frame) for d in self.members])

    def learn(self, frame: pd.DataFrame) -> None:
        for detector in self.members:
            detector.learn(frame)

    def process(self, frame: pd.DataFrame) -> Scores:
        return pool([d.process(frame) for d in self.members])

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        return {d.name: d.snapshot(stations) for d in self.members}

    def restore(self, snapshot: dict[str, Any]) -> None:
        for detector in self.members:
            detector.restore(snapshot[detector.name])

    def dump(self, stations: Sequence[str] | None = None) -> bytes:
        return msgspec.msgpack.encode({d.name: d.dump(stations) for d in self.members})

    def load(self, data: bytes) -> None:
        try:
            dumps = msgspec.msgpack.decode(data, type=dict[str, bytes])
            parts = [dumps[d.name] for d in self.members]
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
            raise ValueError(f"not a {self.name} dump: {exc!r}") from exc
        for detector, part in zip(self.members, parts, strict=True):
            detector.load(part)

    def forget(self, stations: Sequence[str]) -> None:
        for detector in self.members:
            detector.forget(stations)
