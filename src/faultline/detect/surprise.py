"""Calibrated surprise: several streaming views of each sensor, each judged against its own past.

Per (station, sensor), five views are kept up to date in O(1) per reading:

* *point*: |x - location| / scale, the reading against a fast exponentially weighted baseline
  (spikes);
* *mean*: |mean of the last `short` readings - slow baseline| / its scale (level shifts, and
  drifts, which a fast baseline would follow);
* *jump*: |x - previous reading| / scale of such steps (sudden changes);
* *volatility*: fast over slow exponentially weighted variance of the deviations before the
  reading (noise bursts, a flat line coming alive);
* *stuck*: log2(1 + r) for a run of r readings equal to the one before (a frozen sensor).

A feature's value means nothing on its own: a "5" is routine on a bursty series and unheard of on a
smooth one. So each feature keeps streaming estimates of its own 50th, 90th, 99th and 99.9th
percentiles (stochastic-approximation quantile tracking: each value moves each estimate one step
up or down, so an outlier moves it by one step however large it is, at O(1) cost), and reports
its *surprise*, an estimate of -log10 of the share of past values at least as large: linear in
the value between those quantiles (0.3 at the median, 1 at the 90th, 2 at the 99th, 3 at the
99.9th) and beyond the 99th an exponential tail as steep as the flatter of the last two pieces
(wide for bursty signals, so a record on a bursty signal is not taken for a spike on a smooth
one). Readings surprising enough to alarm move the estimates at a tenth of the step, so a
fault does not make the next one look ordinary (a fault that recurs every few hundred readings
on a white-noise sensor still does: the readings of a fault after its onset are learned), and
a run of repeats teaches no baseline or scale (a frozen sensor would otherwise shrink its own
scale and alarm on its recovery). A sensor's
surprise is its largest feature surprise less log10(5), and a reading's is its sensors' largest
less log10(sensors judged): the Bonferroni allowance for having looked several times. Surprise
reads as a probability: 3 = one reading in a thousand. Heavy-tailed noise is the weak spot: the
exponential tail underestimates how often a Student-t(4) reading lands far out.

The score of a reading is its surprise when it is a *peak*, more surprising than every reading of
the station in the last one to two `peak_block`s, and 0 otherwise: a long fault shows as one scored
onset (and any stronger escalation), not hundreds of scored readings. `is_anomaly` follows the
surprise through a hysteresis `Alarm`. NaN (no verdict) until a sensor has learned `warmup` values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from faultline.detect.base import Detector, Scores
from faultline.detect.likelihood import Alarm
from faultline.detect.slots import StationSlots, grow, sensor_values, slot_rounds
from faultline.schema import STATION_ID

FEATURES = ("point", "mean", "jump", "volatility", "stuck")
_F = len(FEATURES)
_LOOKS = math.log10(_F)
QUANTILES = np.array([0.5, 0.9, 0.99, 0.999])
_SURPRISE_AT = -np.log10(1 - QUANTILES)  # 0.30, 1, 2, 3
# Where the quantile estimates start: |N(0, 1)| for the three deviations in scales (they are
# standard deviations on normal data), about 1 for the volatility ratio, no repeats for stuck.
_PRIOR = np.array(
    [[0.674, 1.645, 2.576, 3.291]] * 3 + [[1.0, 1.25, 1.55, 1.8], [0.0, 0.0, 0.0, 0.0]]
)
# In feature units, the steepest tail the estimates may claim: a run of repeats is counted in
# readings, so there one more repeat than ever seen is worth at most one decade.
_MIN_SPREAD = np.array([0.05, 0.05, 0.05, 0.05, 0.5])
# A run this long is not a live signal: it teaches neither baselines nor scales.
_STUCK_RUN = 2
_ALARMED_WEIGHT = 0.1
# E|X - mean| = sigma * sqrt(2/pi) for normal data, so mean absolute deviations are scaled by
# sqrt(pi/2) to read as standard deviations.
_SIGMA_PER_MAD = math.sqrt(math.pi / 2)
# A sensor that never varies has no scale; this floor (relative to its level) stands in for it.
_SCALE_FLOOR = 1e-9

# Per-sensor state: scalar fields, then the short ring and the quantile estimates.
_SCALARS = (
    "n",
    "location",
    "slow_location",
    "last",
    "point_scale",
    "mean_scale",
    "jump_scale",
    "fast_var",
    "slow_var",
    "run",
    "calibrated",
)


class SurpriseDetector(Detector):
    """Multi-view streaming detector with per-view quantile calibration and peak alarms."""

    name: ClassVar[str] = "surprise"

    def __init__(
        self,
        sensors: Sequence[str],
        *,
        threshold: float = 4.0,
        warmup: int = 100,
        alpha: float = 0.01,
        slow: float = 0.001,
        short: int = 6,
        fast: float = 1 / 12,
        adapt: float = 1 / 30,
        peak_block: int = 125,
    ) -> None:
        super().__init__(sensors)
        if warmup < 2 or short < 1 or peak_block < 1:
            raise ValueError("need warmup >= 2, short >= 1 and peak_block >= 1")
        if not all(0 < v < 1 for v in (alpha, slow, fast, adapt)) or not threshold > 0:
            raise ValueError(
                "alpha, slow, fast and adapt must lie in (0, 1) and threshold be positive"
            )
        self.threshold, self.warmup, self.alpha, self.slow = threshold, warmup, alpha, slow
        self.short, self.fast, self.adapt, self.peak_block = short, fast, adapt, peak_block
        self.alarm = Alarm(on=threshold, off=threshold / 2, min_duration=short, clear=short)
        self._slots = StationSlots()
        m = len(self.sensors)
        self._s = {name: np.zeros((0, m)) for name in _SCALARS}
        self._ring = np.zeros((0, m, short))
        self._q = np.zeros((0, m, _F, len(QUANTILES)))
        self._peak = np.zeros((0, 3))  # per station: max of the current block, previous, count
        self._bits = np.left_shift(np.int64(1), np.arange(m, dtype=np.int64))

    def score(self, frame: pd.DataFrame) -> Scores:
        slots = self._slots.lookup(frame[STATION_ID].to_numpy())
        x = sensor_values(frame, self.sensors)
        out = Scores.empty(len(frame))
        known = np.flatnonzero(slots >= 0)
        if len(known):
            s = slots[known]
            st = {name: values[s] for name, values in self._s.items()}
            sensor, _ = self._judge(s, st, x[known])
            stations = frame[STATION_ID].to_numpy()[known]
            got = self._verdict(s, stations, sensor, learn=False)
            out.score[known], out.is_anomaly[known], out.sensor_mask[known] = got
        return out

    def learn(self, frame: pd.DataFrame) -> None:
        self.process(frame)

    def process(self, frame: pd.DataFrame) -> Scores:
        stations = frame[STATION_ID].to_numpy()
        slots = self._slots.assign(stations)
        self._ensure(len(self._slots))
        x = sensor_values(frame, self.sensors)
        out = Scores.empty(len(frame))
        for rows in slot_rounds(slots):
            s = slots[rows]
            st = {name: values[s] for name, values in self._s.items()}
            sensor, features = self._judge(s, st, x[rows])
            out.score[rows], out.is_anomaly[rows], out.sensor_mask[rows] = self._verdict(
                s, stations[rows], sensor, learn=True
            )
            self._absorb(s, st, x[rows], features, sensor)
        return out

    def _judge(
        self, s: np.ndarray, st: dict[str, np.ndarray], x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(per-sensor surprise, feature values) of one round; NaN where there is no verdict."""
        n = st["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            recent = self._short_mean(s, n, x)
            floor = _SCALE_FLOOR * (1 + np.abs(st["location"]))
            features = np.stack(
                [
                    np.abs(x - st["location"]) / np.maximum(st["point_scale"], floor),
                    np.abs(recent - st["slow_location"]) / np.maximum(st["mean_scale"], floor),
                    np.abs(x - st["last"]) / np.maximum(st["jump_scale"], floor),
                    np.sqrt(st["fast_var"] / np.maximum(st["slow_var"], floor * floor)),
                    np.log2(1 + np.where(x == st["last"], st["run"] + 1, 0.0)),
                ],
                axis=2,
            )
        # Features exist once there are two values to measure a spread from.
        features[~((n >= 2) & np.isfinite(x))] = np.nan
        judged = (n >= self.warmup) & np.isfinite(x)
        surprise = _surprise(self._q[s], np.nan_to_num(features)).max(axis=2) - _LOOKS
        surprise[~judged] = np.nan
        return surprise, features

    def _short_mean(self, s: np.ndarray, n: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Mean of `x` and the newest `short - 1` earlier values of each sensor."""
        k = self.short
        n = n.astype(np.int64)
        # Value number t sits at ring position t % k, so the i-th newest is at (n - 1 - i) % k.
        newest_first = np.take_along_axis(self._ring[s], (n[..., None] - 1 - np.arange(k)) % k, 2)
        held = np.minimum(n, k - 1)
        total = np.where(np.arange(k) < held[..., None], newest_first, 0.0).sum(axis=2)
        return (total + x) / (held + 1)

    def _verdict(
        self, s: np.ndarray, stations: np.ndarray, sensor: np.ndarray, *, learn: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        judged = np.isfinite(sensor)
        count = judged.sum(axis=1)
        has = count > 0
        level = np.full(len(s), np.nan)
        level[has] = np.nanmax(sensor[has], axis=1) - np.log10(count[has])
        peak = self._peak[s]
        is_peak = has & (level > np.maximum(peak[:, 0], peak[:, 1]))
        score = np.where(is_peak, level, np.where(has, 0.0, np.nan))
        if learn:
            active, _ = self.alarm.update(stations, level)
            self._advance_peaks(s[has], level[has])
        else:
            active, _ = self.alarm.peek(stations, level)
        active &= has
        with np.errstate(invalid="ignore"):
            blamed = judged & (sensor >= self.alarm.off)
        worst = np.argmax(np.where(judged, sensor, -np.inf), axis=1)
        bits = np.where(blamed.any(axis=1), blamed @ self._bits, self._bits[worst])
        return score, active, np.where(active, bits, 0)

    def _advance_peaks(self, s: np.ndarray, level: np.ndarray) -> None:
        peak = self._peak[s]
        peak[:, 0] = np.maximum(peak[:, 0], level)
        peak[:, 2] += 1
        full = peak[:, 2] >= self.peak_block
        peak[full, 1] = peak[full, 0]
        peak[full, 0] = 0.0
        peak[full, 2] = 0
        self._peak[s] = peak

    def _absorb(
        self,
        s: np.ndarray,
        st: dict[str, np.ndarray],
        x: np.ndarray,
        features: np.ndarray,
        surprise: np.ndarray,
    ) -> None:
        """Learn one round (distinct slots); a sensor without a finite value learns nothing."""
        finite = np.isfinite(x)
        n = st["n"]
        first = finite & (n == 0)
        with np.errstate(invalid="ignore"):
            repeat = (x == st["last"]) & finite & ~first
        run = np.where(repeat, st["run"] + 1, 0.0)
        learn = finite & ~first & (run < _STUCK_RUN)
        rate = np.maximum(self.alpha, 1 / (n + 1))
        slow = np.maximum(self.slow, 1 / (n + 1))
        with np.errstate(invalid="ignore"):
            deviation = np.where(finite, x - st["location"], 0.0)
            step = np.where(learn, x - st["last"], 0.0)
            recent = np.where(finite, self._short_mean(s, n, x) - st["slow_location"], 0.0)
        for name, value, weight in (
            ("point_scale", _SIGMA_PER_MAD * np.abs(deviation), rate),
            ("mean_scale", _SIGMA_PER_MAD * np.abs(recent), slow),
            ("jump_scale", _SIGMA_PER_MAD * np.abs(step), rate),
            ("fast_var", deviation * deviation, np.maximum(self.fast, 1 / (n + 1))),
            ("slow_var", deviation * deviation, rate),
        ):
            st[name] = np.where(learn, st[name] + weight * (value - st[name]), st[name])
        st["run"] = np.where(finite, run, st["run"])
        st["location"] = np.where(
            first, x, np.where(learn, st["location"] + rate * deviation, st["location"])
        )
        st["slow_location"] = np.where(
            first, x, np.where(learn, st["slow_location"] + slow * recent, st["slow_location"])
        )
        st["last"] = np.where(finite, x, st["last"])
        # The first values' features are measured against scales from a handful of readings and
        # run wild; calibrating on them would make later real anomalies look ordinary.
        counted = np.isfinite(features).all(axis=2) & (n >= self.warmup // 4)
        if counted.any():
            # What raises an alarm barely teaches the calibration, so a fault does not make the
            # next one look ordinary; a lasting change of regime still gets learned.
            with np.errstate(invalid="ignore"):
                weight = np.where(surprise >= self.threshold, _ALARMED_WEIGHT, 1.0)
            self._calibrate(s, st["calibrated"], features, np.where(counted, weight, 0.0))
            st["calibrated"] = st["calibrated"] + counted
        ring = self._ring[s]
        rr, jj = np.nonzero(finite)
        ring[rr, jj, (n[rr, jj].astype(np.int64)) % self.short] = x[rr, jj]
        self._ring[s] = ring
        st["n"] = n + finite
        for name, values in st.items():
            self._s[name][s] = values

    def _calibrate(
        self, s: np.ndarray, done: np.ndarray, features: np.ndarray, weight: np.ndarray
    ) -> None:
        """Move each quantile estimate one step towards the new value (Robbins-Monro).

        A step is `adapt` times the estimates' own 50th-99th spread (larger while few values
        have been seen), up by p when the value lies above the p-quantile estimate and down by
        1 - p otherwise, so each estimate settles where a share 1 - p of values lie above it.
        """
        q = self._q[s]
        fresh = (done == 0) & (weight > 0)
        if fresh.any():
            q[fresh] = _PRIOR
        gain = np.maximum(self.adapt, 1.0 / (done + 10.0))
        spread = np.maximum(q[..., 2] - q[..., 0], _MIN_SPREAD)
        above = features[..., None] > q
        move = np.where(above, QUANTILES, QUANTILES - 1.0)
        step = (weight * gain)[..., None, None] * spread[..., None] * move
        q += step
        # Estimates of one feature stay ordered, so the surprise stays monotonic.
        np.maximum.accumulate(q, axis=3, out=q)
        self._q[s] = q

    def _ensure(self, stations: int) -> None:
        for name in _SCALARS:
            self._s[name] = grow(self._s[name], stations, 0.0)
        self._ring = grow(self._ring, stations, 0.0)
        self._q = grow(self._q, stations, 0.0)
        self._peak = grow(self._peak, stations, 0.0)

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        chosen = self._slots.known(stations)
        state = {}
        for station in chosen:
            slot = self._slots.get(station)
            state[station] = {
                "sensors": {
                    name: {
                        **{f: float(self._s[f][slot, j]) for f in _SCALARS},
                        "ring": self._ring[slot, j].tolist(),
                        "quantiles": self._q[slot, j].tolist(),
                    }
                    for j, name in enumerate(self.sensors)
                },
                "peak": self._peak[slot].tolist(),
            }
        return {"stations": state, "alarm": self.alarm.snapshot(chosen)}

    def restore(self, snapshot: dict[str, Any]) -> None:
        stations: dict[str, Any] = snapshot["stations"]
        for station, state in stations.items():
            unknown = set(state["sensors"]) - set(self.sensors)
            if unknown:
                raise ValueError(f"snapshot of {station!r} has unknown sensors {sorted(unknown)}")
        slots = self._slots.assign(np.array(list(stations), dtype=object))
        self._ensure(len(self._slots))
        for slot, state in zip(slots, stations.values(), strict=True):
            for j, name in enumerate(self.sensors):
                sensor = state["sensors"].get(name)
                for f in _SCALARS:
                    self._s[f][slot, j] = sensor[f] if sensor else 0.0
                self._ring[slot, j] = sensor["ring"] if sensor else 0.0
                self._q[slot, j] = sensor["quantiles"] if sensor else 0.0
            self._peak[slot] = state["peak"]
        self.alarm.restore(snapshot["alarm"])


def _surprise(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """-log10 of the estimated share of values >= v, from quantile estimates q (..., 4).

    Piecewise linear through (0, 0), (q50, 0.3), (q90, 1), (q99, 2), (q999, 3), and beyond the
    99.9th percentile an exponential tail (linear in surprise) as steep as the flatter of the
    last two pieces.
    """
    q50, q90, q99, q999 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    d1 = np.maximum(q90 - q50, _MIN_SPREAD)
    d2 = np.maximum(q99 - q90, _MIN_SPREAD)
    d3 = np.maximum(q999 - q99, d2)
    at = _SURPRISE_AT
    return np.where(
        v > q99,
        at[2] + (v - q99) / d3,
        np.where(
            v > q90,
            at[1] + (v - q90) / d2,
            np.where(
                v > q50,
                at[0] + (at[1] - at[0]) * (v - q50) / d1,
                at[0] * v / np.maximum(q50, _MIN_SPREAD),
            ),
        ),
    )
