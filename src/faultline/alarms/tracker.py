"""From a scored batch's verdicts to alarm transitions, with explicit per-station state.

`AlarmTracker.step(frame, state)` is a pure function: it reads the verdict columns of a batch
as the detector pipeline leaves them (IS_ANOMALY, SENSOR_MASK, one score column per detector)
and the state the previous batches left, and returns the transitions and the new state. It walks
each station's readings in order and keeps nothing else, so the same readings give the same
transitions however they are cut into batches, and a state snapshotted between two batches and
restored gives the same as never stopping.

A station's verdicts are one condition (its detectors judge the station reading by reading), so
at most one `anomaly` alarm of a station is active at a time. Its sensor is the one with the
largest share of the condition's score when it activates ("*" when no sensor is blamed); the
shares of all blamed sensors travel with every transition. A flagged reading weighs
1 + its scores in units of their detectors' medium severity, split evenly over the sensors it
blames; its severity is the highest level any calibrated detector's score reaches.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from faultline.alarm_schema import ANOMALY, ENGINE, STATION_WIDE, AlarmKey, AlarmTransition
from faultline.config import SEVERITIES, AlarmRule, AlarmSettings
from faultline.schema import IS_ANOMALY, SENSOR_MASK, STATION_ID, TS, score_column

_IDLE, _PENDING, _ACTIVE = 0, 1, 2
_SNAPSHOT_VERSION = 1
_SHARE_DECIMALS = 3
_DEADBAND_SHARE = 0.25  # of a cleared alarm's score: its sensors the deadband holds for
_ACTION_ORDER = {"clear": 0, "raise": 1, "escalate": 2}  # within one timestamp


@dataclass(slots=True)
class _Station:
    """One station's alarm state; see the module docstring for what each phase means."""

    seen: int = 0  # readings so far: warm-up and deadbands in readings count them
    phase: int = _IDLE
    start_ts: int = 0  # pending: first reading of the condition; active: the activation
    run: int = 0  # pending: condition readings in a row
    severity: int = 0  # rank of the condition's highest severity so far
    weights: dict[str, float] = field(default_factory=dict)  # score weight per blamed sensor
    sensor: str = ""  # active: the alarm's sensor
    absent: int = 0  # active: readings in a row without the condition
    absent_ts: int = 0  # active: the first of them
    cleared: dict[str, list[int]] = field(default_factory=dict)  # sensor -> [clear ts, seen]
    last_ts: int = 0  # the latest reading's time, to see gaps
    resume: int = 0  # readings still suppressed after a gap

    def copy(self) -> _Station:
        return replace(
            self,
            weights=dict(self.weights),
            cleared={k: list(v) for k, v in self.cleared.items()},
        )

    def to_json(self) -> list[Any]:
        return [
            self.seen,
            self.phase,
            self.start_ts,
            self.run,
            self.severity,
            self.weights,
            self.sensor,
            self.absent,
            self.absent_ts,
            self.cleared,
            self.last_ts,
            self.resume,
        ]

    @staticmethod
    def from_json(station: str, fields: Any) -> _Station:
        if not isinstance(fields, list) or len(fields) != 12:
            raise ValueError(f"alarm state of station {station!r} is malformed: {fields!r}")
        seen, phase, start, run, severity, weights, sensor, absent, absent_ts, cleared = fields[:10]
        last_ts, resume = fields[10:]
        if phase not in (_IDLE, _PENDING, _ACTIVE) or not isinstance(weights, dict):
            raise ValueError(f"alarm state of station {station!r} is malformed: {fields!r}")
        return _Station(
            int(seen),
            phase,
            int(start),
            int(run),
            int(severity),
            {str(k): float(v) for k, v in weights.items()},
            str(sensor),
            int(absent),
            int(absent_ts),
            {str(k): [int(v[0]), int(v[1])] for k, v in cleared.items()},
            int(last_ts),
            int(resume),
        )


@dataclass(frozen=True)
class TrackerState:
    """The alarm state of every station the tracker has seen; never changed in place."""

    stations: Mapping[str, _Station] = field(default_factory=dict)

    def snapshot(self, stations: Iterable[str] | None = None) -> bytes:
        """The state of `stations` (all when None) as compressed JSON."""
        chosen = self.stations if stations is None else stations
        body = {
            "version": _SNAPSHOT_VERSION,
            "stations": {s: self.stations[s].to_json() for s in chosen if s in self.stations},
        }
        return zlib.compress(json.dumps(body, separators=(",", ":")).encode())

    @staticmethod
    def restore(snapshot: bytes) -> TrackerState:
        try:
            body = json.loads(zlib.decompress(snapshot))
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"not an alarm tracker snapshot: {exc}") from exc
        if not isinstance(body, dict) or body.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(
                f"alarm tracker snapshot of an unknown version: {body.get('version')!r}"
                if isinstance(body, dict)
                else "alarm tracker snapshot is not an object"
            )
        stations = body.get("stations")
        if not isinstance(stations, dict):
            raise ValueError("alarm tracker snapshot lacks its stations")
        return TrackerState({s: _Station.from_json(s, v) for s, v in stations.items()})

    def merged(self, other: TrackerState) -> TrackerState:
        """This state with `other`'s stations replacing ours (a restored partition's)."""
        return TrackerState({**self.stations, **other.stations})


class AlarmTracker:
    """Derives anomaly alarm transitions from verdicts under the configured rules."""

    def __init__(self, settings: AlarmSettings, sensors: Sequence[str]) -> None:
        self.settings = settings
        self.sensors = tuple(sensors)
        self._rules: dict[tuple[str, str], AlarmRule] = {}

    def rule(self, station_id: str, sensor: str) -> AlarmRule:
        key = (station_id, sensor)
        found = self._rules.get(key)
        if found is None:
            found = self._rules[key] = self.settings.rule_for(station_id, sensor)
        return found

    def step(
        self, frame: pd.DataFrame, state: TrackerState
    ) -> tuple[list[AlarmTransition], TrackerState]:
        """The transitions `frame`'s verdicts cause and the state after them.

        `frame` holds each station's readings in event-time order (stations may interleave).
        """
        if len(frame) == 0:
            return [], state
        codes, names = pd.factorize(frame[STATION_ID], sort=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        ts = frame[TS].to_numpy(np.int64)[order]
        flagged = frame[IS_ANOMALY].to_numpy(bool)[order]
        masks = frame[SENSOR_MASK].to_numpy(np.int64)[order]
        rank, weight = self._rank_and_weight(frame)
        rank, weight = rank[order], weight[order]
        stations = dict(state.stations)
        out: list[AlarmTransition] = []
        for part in np.split(np.arange(len(order)), bounds):
            station_id = str(names[codes[order[part[0]]]])
            before = stations.get(station_id)
            st = before.copy() if before is not None else _Station()
            self._walk(
                station_id, st, ts[part], flagged[part], masks[part], rank[part], weight[part], out
            )
            stations[station_id] = st
        out.sort(key=lambda t: (t.ts, t.alarm, _ACTION_ORDER[t.action], t.key))
        return out, TrackerState(stations)

    def _rank_and_weight(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        n = len(frame)
        rank = np.zeros(n, np.int64)
        weight = np.ones(n)
        for detector, scale in self.settings.severity.items():
            column = score_column(detector)
            if column not in frame:
                continue
            score = np.nan_to_num(frame[column].to_numpy(np.float64), nan=0.0)
            rank = np.maximum(
                rank,
                (score >= scale.medium).astype(np.int64)
                + (score >= scale.high)
                + (score >= scale.critical),
            )
            weight += np.maximum(score, 0.0) / scale.medium
        return rank, weight

    def _walk(
        self,
        station_id: str,
        st: _Station,
        ts: np.ndarray,
        flagged: np.ndarray,
        masks: np.ndarray,
        rank: np.ndarray,
        weight: np.ndarray,
        out: list[AlarmTransition],
    ) -> None:
        n = len(ts)
        flagged = flagged & ~self._after_gap(station_id, st, ts)
        warm = max(0, self.settings.warmup_readings - st.seen)  # readings still warming up
        i = min(warm, n)
        st.seen += i
        flagged_at = np.flatnonzero(flagged)
        while i < n:
            if st.phase == _IDLE:
                # Nothing to do until the next flagged reading: jump there.
                j = int(np.searchsorted(flagged_at, i))
                if j == len(flagged_at):
                    st.seen += n - i
                    return
                st.seen += int(flagged_at[j]) - i
                i = int(flagged_at[j])
            st.seen += 1
            t = int(ts[i])
            if st.phase == _ACTIVE:
                self._continue(
                    station_id,
                    st,
                    t,
                    bool(flagged[i]),
                    int(masks[i]),
                    int(rank[i]),
                    float(weight[i]),
                    out,
                )
            elif flagged[i]:
                self._pend(station_id, st, t, int(masks[i]), int(rank[i]), float(weight[i]), out)
            else:
                st.phase = _IDLE  # the on-delay needs the condition without a break
            i += 1

    def _after_gap(self, station_id: str, st: _Station, ts: np.ndarray) -> np.ndarray:
        """Which readings fall among the first `resume_readings` after a silence."""
        n = len(ts)
        rule = self.rule(station_id, STATION_WIDE)
        previous = np.r_[st.last_ts if st.seen else ts[0], ts[:-1]]
        gaps = np.flatnonzero(ts - previous > rule.silent_after_s * 1000)
        out = np.zeros(n, bool)
        out[: st.resume] = True
        end = st.resume
        for g in gaps.tolist():
            out[g : g + rule.resume_readings] = True
            end = g + rule.resume_readings
        st.resume = max(0, end - n)
        st.last_ts = int(ts[-1])
        return out

    def _add(self, st: _Station, mask: int, weight: float) -> None:
        blamed = [name for k, name in enumerate(self.sensors) if mask >> k & 1] or [STATION_WIDE]
        share = weight / len(blamed)
        for name in blamed:
            st.weights[name] = st.weights.get(name, 0.0) + share

    def _pend(
        self,
        station_id: str,
        st: _Station,
        t: int,
        mask: int,
        rank: int,
        weight: float,
        out: list[AlarmTransition],
    ) -> None:
        if st.phase == _IDLE:
            st.phase, st.start_ts, st.run, st.severity, st.weights = _PENDING, t, 0, 0, {}
        st.run += 1
        st.severity = max(st.severity, rank)
        self._add(st, mask, weight)
        sensor = self._top(st.weights)
        rule = self.rule(station_id, sensor)
        cleared = st.cleared.get(sensor)
        if cleared is not None and (
            st.seen - cleared[1] <= rule.deadband_readings
            or t - cleared[0] < rule.deadband_s * 1000
        ):
            st.phase = _IDLE  # within the deadband the condition is not taken up
            return
        immediate = st.severity >= SEVERITIES.index(rule.immediate_severity)
        held = st.run >= rule.on_delay_readings and t - st.start_ts >= rule.on_delay_s * 1000
        if not (immediate or held):
            return
        st.phase, st.start_ts, st.sensor, st.absent = _ACTIVE, t, sensor, 0
        st.cleared.pop(sensor, None)
        out.append(self._transition(station_id, st, "raise", t))

    def _continue(
        self,
        station_id: str,
        st: _Station,
        t: int,
        flagged: bool,
        mask: int,
        rank: int,
        weight: float,
        out: list[AlarmTransition],
    ) -> None:
        if flagged:
            st.absent = 0
            self._add(st, mask, weight)
            if rank > st.severity:
                st.severity = rank
                out.append(self._transition(station_id, st, "escalate", t, SEVERITIES[rank]))
            return
        if st.absent == 0:
            st.absent_ts = t
        st.absent += 1
        rule = self.rule(station_id, st.sensor)
        if st.absent >= rule.off_delay_readings and t - st.absent_ts >= rule.off_delay_s * 1000:
            out.append(self._transition(station_id, st, "clear", t))
            # The deadband holds for every sensor that carried a good part of the alarm, not
            # only its own: a fault whose end (a drift snapping back) is judged on another
            # sensor than its start would otherwise be a second alarm for one condition. A
            # sensor blamed only in passing keeps its own alarms.
            total = sum(st.weights.values())
            for name, weight in st.weights.items():
                if name == st.sensor or weight >= _DEADBAND_SHARE * total:
                    st.cleared[name] = [t, st.seen]
            st.phase, st.weights, st.run, st.severity = _IDLE, {}, 0, 0

    def _top(self, weights: Mapping[str, float]) -> str:
        best, top = -1.0, STATION_WIDE
        for name in (*self.sensors, STATION_WIDE):  # configured order breaks ties
            w = weights.get(name)
            if w is not None and w > best:
                best, top = w, name
        return top

    def _transition(
        self, station_id: str, st: _Station, action: Any, t: int, detail: str = ""
    ) -> AlarmTransition:
        total = sum(st.weights.values())
        shares = sorted(
            ((name, round(w / total, _SHARE_DECIMALS)) for name, w in st.weights.items()),
            key=lambda p: (-p[1], p[0]),
        )
        return AlarmTransition(
            AlarmKey(station_id, st.sensor, ANOMALY),
            action,
            t,
            st.start_ts,
            actor=ENGINE,
            severity=SEVERITIES[st.severity],  # type: ignore[arg-type]
            sensors=tuple(shares),
            detail=detail,
        )
