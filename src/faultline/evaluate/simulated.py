"""A detector against the simulator's ground truth: every fault kind, event-wise.

Each fault kind gets its own run: the same stations, hours and seed, with the simulator drawing
only that kind (at `faults_per_station_hour`). So every alarm of a run either detects a fault of
that kind or is a false alarm charged to it, which is what makes per-kind precision mean
something. The readings go through `Detector.process` in the order the simulator emits them
(tick by tick, stations interleaved), in engine-sized batches, so each station's state is
vectorised across stations exactly as in the engine. Only `process` is timed.

Events that begin before a station's first verdict (the detector's warm-up, and the readings it
scores while still calibrating, `Scores.learning`) are not counted, and neither are the alarms
that detect them. Matching and delays: `faultline.evaluate.events`.

A dropout sends no readings, so a detector can only react to the first reading after it (within
the grace). Live, the station-health layer is what sees a dropout: the API declares a station
silent when no reading has arrived for `silent_after_ms` (10 s at 1 Hz). That rule is scored on
the same dropouts from the readings' times, as its own line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from faultline.config import DEFAULT_SENSORS, SensorSpec
from faultline.detect.base import Detector
from faultline.evaluate.detectors import EvalDetector
from faultline.evaluate.events import (
    ALL_SENSORS,
    Events,
    EventScore,
    alarm_onsets,
    score_events,
    silence_alarms,
)
from faultline.evaluate.replay import CHUNK_ROWS
from faultline.schema import STATION_ID, TS, FaultLabel
from faultline.simulate import STATION_WIDE, FaultKind, fault_kinds, normal_frame, simulate_frame

DAY_MS = 86_400_000
TRAINING_ROWS = 20_000  # fault-free readings an offline model is fitted on, as `faultline train`


@dataclass(frozen=True)
class SimulationSetup:
    stations: int = 50
    hours: float = 2.0
    seed: int = 0
    faults_per_station_hour: float = 2.0
    grace: int = 10  # readings after a fault's end in which an alarm still detects it
    interval_ms: int = 1000  # 1 Hz, the live rate
    silent_ms: int = 10_000  # the station-health rule at that rate (`silent_after_ms`)

    def __post_init__(self) -> None:
        if self.stations < 1 or self.hours <= 0 or self.grace < 0:
            raise ValueError("need stations >= 1, hours > 0 and grace >= 0")
        if self.faults_per_station_hour <= 0:
            raise ValueError("faults_per_station_hour must be positive: there must be faults")

    @property
    def ticks(self) -> int:
        return max(1, round(self.hours * 3_600_000 / self.interval_ms))


@dataclass(frozen=True)
class KindResult:
    kind: str
    score: EventScore
    unscored: int  # events begun during the detector's warm-up
    false_alarms: int


@dataclass(frozen=True)
class SimulationRun:
    detector: str
    setup: SimulationSetup
    kinds: dict[str, KindResult]
    station_health: EventScore  # the API's silence rule on the dropout run
    readings: int
    seconds: float  # in Detector.process
    station_days: float

    @property
    def false_alarms(self) -> int:
        return sum(k.false_alarms for k in self.kinds.values())

    @property
    def false_alarms_per_station_day(self) -> float:
        return self.false_alarms / self.station_days

    @property
    def readings_per_s(self) -> float:
        return self.readings / max(self.seconds, 1e-9)

    def as_json(self) -> dict[str, Any]:
        s = self.setup
        return {
            "detector": self.detector,
            "stations": s.stations,
            "hours": s.hours,
            "seed": s.seed,
            "faults_per_station_hour": s.faults_per_station_hour,
            "grace_readings": s.grace,
            "kinds": {
                name: {
                    **k.score.as_json(),
                    "unscored_events": k.unscored,
                    "false_alarms": k.false_alarms,
                }
                for name, k in self.kinds.items()
            },
            "dropout_station_health": self.station_health.as_json(),
            "false_alarms": self.false_alarms,
            "station_days": self.station_days,
            "false_alarms_per_station_day": self.false_alarms_per_station_day,
            "readings": self.readings,
            "seconds": self.seconds,
            "readings_per_s": self.readings_per_s,
        }


def run_simulation(
    spec: EvalDetector,
    setup: SimulationSetup,
    kinds: Sequence[str] | None = None,
    sensors: Mapping[str, SensorSpec] = DEFAULT_SENSORS,
) -> SimulationRun:
    """One run per fault kind (by default every kind the sensors allow: the relation kinds when
    some sensor is coupled) through a fresh detector each; see the module docstring."""
    if kinds is None:
        kinds = fault_kinds(any(s.load_coupling for s in sensors.values()))
    names = tuple(sensors)
    training = (
        normal_frame(dict(sensors), TRAINING_ROWS, seed=setup.seed + 1)
        if spec.needs_training
        else normal_frame(dict(sensors), 0, seed=0)
    )
    results: dict[str, KindResult] = {}
    health = EventScore(0, 0, 0, 0, np.empty(0, np.int64))
    readings = 0
    seconds = 0.0
    for kind in kinds:
        frame, labels = simulate_frame(
            sensors,
            setup.ticks,
            stations=setup.stations,
            seed=setup.seed,
            faults_per_station_hour=setup.faults_per_station_hour,
            fault_weights={kind: 1.0},
            interval_ms=setup.interval_ms,
        )
        detector = spec.build(names, training)
        flagged, mask, judged, spent = _process(detector, frame)
        readings += len(frame)
        seconds += spent
        codes, uniques = pd.factorize(frame[STATION_ID])
        station_code = {s: i for i, s in enumerate(uniques)}
        events = _events(labels, station_code, names)
        ts = frame[TS].to_numpy(np.int64)
        alarms = alarm_onsets(codes, ts, flagged, mask)
        counted = (
            events.start >= _first_verdict(codes, ts, judged, len(station_code))[events.station]
        )
        grace_ms = setup.grace * setup.interval_ms
        got = score_events(alarms, events, grace_ms, setup.interval_ms, counted)
        results[kind] = KindResult(kind, got, int((~counted).sum()), got.alarms - got.true_alarms)
        if kind == FaultKind.DROPOUT.value:
            health = score_events(
                silence_alarms(codes, ts, setup.silent_ms), events, grace_ms, setup.interval_ms
            )
    station_days = len(kinds) * setup.stations * setup.ticks * setup.interval_ms / DAY_MS
    return SimulationRun(spec.name, setup, results, health, readings, seconds, station_days)


def _process(
    detector: Detector, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    n = len(frame)
    flagged = np.zeros(n, bool)
    mask = np.zeros(n, np.int64)
    judged = np.zeros(n, bool)
    spent = 0.0
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        part = frame.iloc[rows]
        began = time.perf_counter()
        got = detector.process(part)
        spent += time.perf_counter() - began
        flagged[rows], mask[rows], judged[rows] = got.is_anomaly, got.sensor_mask, got.judged
    return flagged, mask, judged, spent


def _events(
    labels: Sequence[FaultLabel], station_code: dict[str, int], sensors: tuple[str, ...]
) -> Events:
    # A station that sent nothing at all has no code among the readings; it gets its own.
    codes = [station_code.setdefault(lab.station_id, len(station_code)) for lab in labels]
    return Events(
        station=np.array(codes, np.int64),
        sensor=np.array(
            [
                ALL_SENSORS if lab.sensor == STATION_WIDE else sensors.index(lab.sensor)
                for lab in labels
            ],
            np.int64,
        ),
        start=np.array([lab.start_ts for lab in labels], np.int64),
        end=np.array([lab.end_ts for lab in labels], np.int64),
    )


def _first_verdict(
    codes: np.ndarray, ts: np.ndarray, judged: np.ndarray, stations: int
) -> np.ndarray:
    """Per station code, the time of its first reading with a verdict (int64 max if none)."""
    first = np.full(stations, np.iinfo(np.int64).max)
    np.minimum.at(first, codes[judged], ts[judged])
    return first
