"""The gate a challenger passes before it may serve: both models re-score the same recent readings.

The gate's data is the store's recent window [now - gate_window_s, now), cleaned as training
cleans (models/training.py: less readings flagged anomalous, inside labelled faults or
incomplete), started no earlier than the challenger's own training window ended, so it judges
on readings the challenger never saw; the newest lifecycle.gate_max_readings of them. On it both
models give their own verdicts (`is_anomaly`, the compiled form when present):

- false alarms: the clean readings a model flags (there are no faults among them);
- alarms: episodes of consecutive flagged readings per station, what an operator would see;
- a held-out labelled set: lifecycle.gate_faults simulated faults (the simulator's own shapes,
  faultline.simulate.faults, less dropout, which leaves nothing to score) injected into copies of
  stretches of those recent readings, drawn from a generator seeded by model.seed, so the same
  window always gets the same faults. A fault is caught when a model flags one of its readings;
  the detection rate is the share of all injected readings flagged.

A challenger passes when it flags at least the champion's share of the injected readings less
lifecycle.detection_tolerance, and raises at most the champion's false alarms times
(1 + false_alarm_tolerance) plus false_alarm_slack of the window's readings. With no champion it
passes on its own figures; with too few readings to judge it does not pass (a result, not an
exception, so that the reason is recorded like any other verdict).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from faultline.config import Settings
from faultline.models.base import LoadedModel
from faultline.models.training import stored_training_set
from faultline.schema import STATION_ID, TS
from faultline.simulate.faults import (
    DEFAULT_FAULT_WEIGHTS,
    MALFUNCTION_NOISE_MEAN,
    FaultKind,
    draw_fault,
    weight_table,
)
from faultline.store.base import RecentReadings, Store

# Fewer recent readings than this cannot tell two models' false-alarm rates apart.
MIN_GATE_READINGS = 200
# Mixed into model.seed, so the gate's faults are not the simulator's own stream for that seed.
_GATE_STREAM = 0x6A7E
_MIN_SPREAD = 1e-9


@dataclass(frozen=True, slots=True)
class GateFigures:
    """One model's results on the gate's data."""

    readings: int  # readings of the recent window re-scored
    false_alarms: int  # of those, flagged outside labelled faults
    false_alarm_rate: float  # false_alarms / readings
    alarms: int  # episodes of flagged readings on the recent window
    faults: int  # simulated faults injected into held-out recent readings
    faults_caught: int  # injected faults with at least one reading flagged
    detection_rate: float  # share of the injected faults' readings flagged
    # The detection rate with the threshold raised until the model raises no more false alarms
    # than the quieter of the two (for the model that is quieter: its detection_rate); None
    # without a champion. The gate compares these, not detection_rate (docs/decisions/0018).
    matched_detection_rate: float | None = None


@dataclass(frozen=True, slots=True)
class GateResult:
    challenger_version: str
    champion_version: str | None  # None: no champion to compare with
    passed: bool
    reason: str  # one sentence, always: why it passed or why not
    challenger: GateFigures
    champion: GateFigures | None
    window_start_ms: int
    window_end_ms: int
    gated_at_ms: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GateResult:
        data: dict[str, Any] = json.loads(text)
        champion = data.pop("champion")
        return cls(
            challenger=GateFigures(**data.pop("challenger")),
            champion=None if champion is None else GateFigures(**champion),
            **data,
        )


@dataclass(frozen=True, slots=True)
class GateData:
    """The window's clean readings, by (station, ts), and the injected faults' readings."""

    readings: pd.DataFrame  # station_id, ts and one column per sensor
    faults: tuple[np.ndarray, ...]  # per injected fault: its rows of sensor values
    fault_at: tuple[int, ...]  # per injected fault: the row of `readings` it starts at
    start_ms: int
    end_ms: int


def gate_window(settings: Settings, now_ms: int, trained_until_ms: int | None) -> tuple[int, int]:
    """[now - gate_window_s, now), starting no earlier than the challenger's training ended."""
    start = now_ms - round(settings.lifecycle.gate_window_s * 1000)
    if trained_until_ms is not None:
        start = max(start, trained_until_ms)
    return start, now_ms


def trained_until(params: dict[str, str]) -> int | None:
    """The end of a model's training window (the `train_to` parameter), when it has one."""
    text = params.get("train_to")
    if text is None:
        return None
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def gate_data(
    settings: Settings, store: Store, sensors: Sequence[str], start_ms: int, end_ms: int
) -> GateData:
    """The newest lifecycle.gate_max_readings clean readings of the window, and the faults
    injected into them."""
    limit = settings.lifecycle.gate_max_readings
    columns = [STATION_ID, TS, *sensors]
    if start_ms >= end_ms:
        return GateData(pd.DataFrame(columns=columns), (), (), start_ms, end_ms)
    # The newest `limit` readings of the whole store start at or after this: reading the
    # window from there reads about `limit` readings, not a day of a whole plant.
    newest = store.query(RecentReadings(limit=limit, sensors=()))
    if len(newest) >= limit:
        start_ms = max(start_ms, min(int(newest[TS].min()), end_ms - 1))
    frame = stored_training_set(store, sensors, start_ms, end_ms).frame
    frame = frame.sort_values(TS, kind="stable").tail(limit)
    frame = frame.sort_values([STATION_ID, TS], kind="stable").reset_index(drop=True)
    faults, at = _inject(settings, frame, sensors) if len(frame) >= MIN_GATE_READINGS else ((), ())
    return GateData(frame, faults, at, start_ms, end_ms)


def _inject(
    settings: Settings, frame: pd.DataFrame, sensors: Sequence[str]
) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """lifecycle.gate_faults faults, each into a copy of a stretch of one station's readings.

    Sizes are in the window's spread of each sensor (all stations together, as the simulator's
    configured spread is), levels are the station's own; durations turn into readings with the
    station's median interval. A fault longer than a station's readings is cut to them.
    """
    rng = np.random.default_rng([settings.model.seed, _GATE_STREAM])
    kinds, cumulative = weight_table(
        {k.value: w for k, w in DEFAULT_FAULT_WEIGHTS.items() if k is not FaultKind.DROPOUT}
    )
    values = frame[list(sensors)].to_numpy(np.float64)
    std = np.maximum(values.std(axis=0), _MIN_SPREAD)
    stations = frame[STATION_ID].to_numpy()
    bounds = np.flatnonzero(np.r_[True, stations[1:] != stations[:-1], True])
    starts, ends = bounds[:-1], bounds[1:]
    sizes = ends - starts
    ts = frame[TS].to_numpy(np.int64)
    injected = []
    positions = []
    for _ in range(settings.lifecycle.gate_faults):
        k = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
        lo, hi = int(starts[k]), int(ends[k])
        steps = np.diff(ts[lo:hi])
        tick_s = max(float(np.median(steps)) / 1000, 1e-3) if len(steps) else 1.0
        fault = draw_fault(
            rng,
            kinds,
            cumulative,
            station=0,
            tick=0,
            std=std,
            tick_s=tick_s,
            malfunction_mean=MALFUNCTION_NOISE_MEAN,
        )
        fault.end = min(fault.end, hi - lo - 1)
        length = fault.end + 1
        at = lo + int(rng.integers(hi - lo - length + 1))
        stretch = values[at : at + length].copy()[:, None, :]
        present = np.ones((length, 1), bool)
        fault.apply(stretch, present, ts[at : at + length], 0, values[lo:hi].mean(axis=0))
        injected.append(stretch[:, 0, :])
        positions.append(at)
    return tuple(injected), tuple(positions)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """One model's scores and own decisions on the gate's data."""

    scores: np.ndarray  # the window's clean readings
    flagged: np.ndarray  # their `is_anomaly`
    fault_scores: np.ndarray  # the injected faults' readings, fault after fault
    fault_flagged: np.ndarray


def verdicts(model: LoadedModel, data: GateData, sensors: Sequence[str]) -> Verdicts:
    """`model` on the gate's data (its own sensors, whatever order `sensors` has)."""
    readings = data.readings[list(model.sensors)].to_numpy(np.float64)
    columns = [list(sensors).index(s) for s in model.sensors]
    rows = np.concatenate(data.faults)[:, columns] if data.faults else readings[:0]
    return Verdicts(
        np.asarray(model.anomaly_score(readings), np.float64),
        np.asarray(model.is_anomaly(readings), bool),
        np.asarray(model.anomaly_score(rows), np.float64),
        np.asarray(model.is_anomaly(rows), bool),
    )


def _detection(data: GateData, flagged: np.ndarray, fault_flagged: np.ndarray) -> tuple[int, float]:
    """Faults caught and the share of their readings flagged, crediting only the flags the
    faults caused: a reading flagged without its fault as well would make a model that flags
    more of everything look keener."""
    if not data.faults:
        return 0, 0.0
    anyway = np.concatenate(
        [flagged[at : at + len(f)] for at, f in zip(data.fault_at, data.faults, strict=True)]
    )
    caused = fault_flagged & ~anyway
    # Every fault has at least one reading, so each starts a non-empty segment.
    starts = np.cumsum([0, *(len(f) for f in data.faults[:-1])])
    return int(np.logical_or.reduceat(caused, starts).sum()), float(caused.mean())


def matched_detection(data: GateData, v: Verdicts, false_alarms: int) -> float:
    """The detection rate with the model's threshold raised until it flags only
    `false_alarms` of the clean readings (at most as many as it flags itself)."""
    if false_alarms >= int(v.flagged.sum()):
        return _detection(data, v.flagged, v.fault_flagged)[1]
    threshold = np.sort(v.scores)[::-1][false_alarms]
    return _detection(data, v.scores > threshold, v.fault_scores > threshold)[1]


def figures(data: GateData, v: Verdicts, matched: float | None = None) -> GateFigures:
    flagged = v.flagged
    stations = data.readings[STATION_ID].to_numpy()
    # An episode starts at a flagged reading whose predecessor (of the same station) was not.
    starts = flagged.copy()
    starts[1:] &= ~flagged[:-1] | (stations[1:] != stations[:-1])
    caught, rate = _detection(data, flagged, v.fault_flagged)
    false_alarms = int(flagged.sum())
    return GateFigures(
        readings=len(flagged),
        false_alarms=false_alarms,
        false_alarm_rate=false_alarms / len(flagged) if len(flagged) else 0.0,
        alarms=int(starts.sum()),
        faults=len(data.faults),
        faults_caught=caught,
        detection_rate=rate,
        matched_detection_rate=matched,
    )


def judge(
    settings: Settings, challenger: GateFigures, champion: GateFigures | None
) -> tuple[bool, str]:
    """The decision rule, and the one sentence saying why."""
    if challenger.readings < MIN_GATE_READINGS:
        return False, (
            f"too few readings to judge: {challenger.readings} clean readings in the gate's "
            f"window, at least {MIN_GATE_READINGS} needed"
        )
    own = (
        f"{challenger.false_alarms} false alarms in {challenger.readings} recent readings, "
        f"{challenger.detection_rate:.1%} of the injected faults' readings flagged "
        f"({challenger.faults_caught} of {challenger.faults} faults caught)"
    )
    if champion is None:
        return True, f"no champion to compare with; on its own: {own}"
    t = settings.lifecycle
    mine = _compared(challenger)
    theirs = _compared(champion)
    floor = theirs - t.detection_tolerance
    ceiling = champion.false_alarms * (1 + t.false_alarm_tolerance) + math.floor(
        t.false_alarm_slack * challenger.readings
    )
    problems = []
    if mine < floor:
        problems.append(
            f"at the false-alarm rate both reach it flagged {mine:.1%} of the injected faults' "
            f"readings, the champion {theirs:.1%} (at least {max(floor, 0.0):.1%} needed)"
        )
    if challenger.false_alarms > ceiling:
        problems.append(
            f"it raised {challenger.false_alarms} false alarms in {challenger.readings} recent "
            f"readings, the champion {champion.false_alarms} (at most {ceiling:.0f} allowed)"
        )
    if problems:
        return False, "rejected: " + "; and ".join(problems)
    return True, (
        f"{own}, against the champion's {champion.false_alarms} false alarms; at the "
        f"false-alarm rate both reach it flagged {mine:.1%}, the champion {theirs:.1%}"
    )


def _compared(f: GateFigures) -> float:
    return f.detection_rate if f.matched_detection_rate is None else f.matched_detection_rate


def run_gate(
    settings: Settings,
    store: Store,
    challenger: LoadedModel,
    champion: LoadedModel | None,
    now_ms: int,
) -> GateResult:
    """Score both models on the same recent readings and injected faults; judge the challenger."""
    sensors = list(dict.fromkeys([*challenger.sensors, *(champion.sensors if champion else ())]))
    start, end = gate_window(settings, now_ms, trained_until(challenger.info.params))
    data = gate_data(settings, store, sensors, start, end)
    mine_v = verdicts(challenger, data, sensors)
    if champion is None:
        mine, theirs = figures(data, mine_v), None
    else:
        theirs_v = verdicts(champion, data, sensors)
        # Detection is compared where both models raise as few false alarms as the quieter.
        quieter = min(int(mine_v.flagged.sum()), int(theirs_v.flagged.sum()))
        mine = figures(data, mine_v, matched_detection(data, mine_v, quieter))
        theirs = figures(data, theirs_v, matched_detection(data, theirs_v, quieter))
    passed, reason = judge(settings, mine, theirs)
    return GateResult(
        challenger_version=challenger.info.version,
        champion_version=None if champion is None else champion.info.version,
        passed=passed,
        reason=reason,
        challenger=mine,
        champion=theirs,
        window_start_ms=data.start_ms,
        window_end_ms=data.end_ms,
        gated_at_ms=now_ms,
    )
