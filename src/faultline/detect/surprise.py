"""Calibrated surprise: several streaming views of each sensor, each judged against its own past.

Per (station, sensor), four features are kept up to date in O(1) per reading:

* *point*: |x - location| / scale, the reading against an exponentially weighted baseline (spikes);
* *mean*: the same for the mean of the last `short` readings (level shifts, drifts);
* *jump*: |x - previous reading| / scale of such steps (sudden changes);
* *volatility*: fast over slow exponentially weighted variance of the deviations before the
  reading (noise bursts, a flat line coming alive).

A feature's value means nothing on its own: a "5" is routine on a bursty series and unheard of on a
smooth one. So each feature keeps a decaying histogram of its own past values (log-spaced bins) and
reports its *surprise*, -log10 of the share of past values at least as large. Beyond everything in
the histogram the empirical share cannot go lower than 1/n, so there the tail is extrapolated:
exponential from the histogram's top edge, falling tenfold over the feature's own spread between
its 90th and 99th percentiles (wide for bursty signals, so a record on a bursty signal is not
taken for a spike on a smooth one). Histograms start after `warmup // 4` values, once the
baseline has settled. A sensor's surprise is its largest feature surprise less log10(4) and a
reading's is its sensors' largest less log10(sensors judged), the Bonferroni allowance for having
looked several times. Surprise reads as a probability: 3 = one
reading in a thousand.

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

FEATURES = ("point", "mean", "jump", "volatility")
_F = len(FEATURES)
# Feature values are dimensionless (in scales, or a ratio), so one set of bins serves every sensor.
EDGES = np.r_[0.0, np.geomspace(0.05, 1e4, 47)]
_BINS = len(EDGES)
_MIN_SPREAD = 0.5  # in scales: short histograms cannot claim a steeper tail than this
_LN10 = math.log(10.0)
# E|X - mean| = sigma * sqrt(2/pi) for normal data, so mean absolute deviations are scaled by
# sqrt(pi/2) to read as standard deviations.
_SIGMA_PER_MAD = math.sqrt(math.pi / 2)
# A sensor that never varies has no scale; this floor (relative to its level) stands in for it.
_SCALE_FLOOR = 1e-9

# Per-sensor state: scalar fields, then the short ring and the histograms.
_SCALARS = ("n", "location", "last", "point_scale", "mean_scale", "jump_scale",
            "fast_var", "slow_var", "weight")


class SurpriseDetector(Detector):
    """Multi-feature streaming detector with per-feature empirical calibration and peak alarms."""

    name: ClassVar[str] = "surprise"

    def __init__(
        self,
        sensors: Sequence[str],
        *,
        threshold: float = 4.0,
        warmup: int = 100,
        alpha: float = 0.01,
        short: int = 6,
        fast: float = 1 / 12,
        decay: float = 1 / 3000,
        peak_block: int = 125,
    ) -> None:
        super().__init__(sensors)
        if warmup < 3 or short < 1 or peak_block < 1:
            raise ValueError("need warmup >= 3, short >= 1 and peak_block >= 1")
        if not (0 < alpha < 1 and 0 < fast < 1 and 0 < decay < 1 and threshold > 0):
            raise ValueError("alpha, fast and decay must lie in (0, 1) and threshold be positive")
        self.threshold, self.warmup, self.alpha = threshold, warmup, alpha
        self.short, self.fast, self.decay, self.peak_block = short, fast, decay, peak_block
        self.alarm = Alarm(on=threshold, off=threshold / 2, min_duration=short, clear=short)
        self._slots = StationSlots()
        m = len(self.sensors)
        self._s = {name: np.zeros((0, m)) for name in _SCALARS}
        self._ring = np.zeros((0, m, short))
        self._hist = np.zeros((0, m, _F, _BINS))
        self._peak = np.zeros((0, 3))  # per station: max of the current block, previous, count
        self._bits = np.left_shift(np.int64(1), np.arange(m, dtype=np.int64))

    def score(self, frame: pd.DataFrame) -> Scores:
        slots = self._slots.lookup(frame[STATION_ID].to_numpy())
        x = sensor_values(frame, self.sensors)
        out = Scores.empty(len(frame))
        known = np.flatnonzero(slots >= 0)
        if len(known):
            sensor, _ = self._judge(slots[known], x[known])
            stations = frame[STATION_ID].to_numpy()[known]
            got = self._verdict(slots[known], stations, sensor, learn=False)
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
            sensor, features = self._judge(s, x[rows])
            out.score[rows], out.is_anomaly[rows], out.sensor_mask[rows] = self._verdict(
                s, stations[rows], sensor, learn=True
            )
            self._absorb(s, x[rows], features)
        return out

    def _judge(self, s: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-sensor surprise, feature values) of one round; NaN where there is no verdict."""
        st = {name: values[s] for name, values in self._s.items()}
        n = st["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            deviation = x - st["location"]
            recent = self._short_mean(s, x)
            floor = _SCALE_FLOOR * (1 + np.abs(st["location"]))
            features = np.stack(
                [
                    np.abs(deviation) / np.maximum(st["point_scale"], floor),
                    np.abs(recent - st["location"]) / np.maximum(st["mean_scale"], floor),
                    np.abs(x - st["last"]) / np.maximum(st["jump_scale"], floor),
                    np.sqrt(st["fast_var"] / np.maximum(st["slow_var"], floor * floor)),
                ],
                axis=2,
            )
        # Features exist once there are two values to measure a spread from.
        features[~((n >= 2) & np.isfinite(x))] = np.nan
        judged = (n >= self.warmup) & np.isfinite(x)
        surprise = self._surprise(s, features) - math.log10(_F)
        surprise[~judged] = np.nan
        return surprise, features

    def _surprise(self, s: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Each feature's surprise against its own histogram, the largest per sensor."""
        hist = self._hist[s]  # (rows, sensors, features, bins)
        total = self._s["weight"][s][:, :, None]
        values = np.nan_to_num(features)
        b = np.searchsorted(EDGES, values, side="right") - 1
        cum = np.cumsum(hist, axis=3)
        at = b[..., None]
        above = total - np.take_along_axis(cum, at, 3)[..., 0] + 0.5 * np.take_along_axis(
            hist, at, 3
        )[..., 0]
        empirical = -np.log10((above + 0.5) / (total + 1))
        # Beyond the histogram's support, an exponential tail from its top edge, falling tenfold
        # over the feature's own spread between its 90th and 99th percentiles.
        spread = np.maximum(_quantile(cum, total, 0.99) - _quantile(cum, total, 0.90), _MIN_SPREAD)
        top = EDGES[np.minimum(_BINS - np.argmax(hist[..., ::-1] > 0, axis=3), _BINS - 1)]
        edge = -np.log10(0.5 / (total + 1))
        tail = edge + np.maximum(values - top, 0.0) / spread
        surprise = np.where(above < 1, np.maximum(empirical, tail), empirical)
        return surprise.max(axis=2)

    def _short_mean(self, s: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Mean of `x` and the newest `short - 1` earlier values of each sensor."""
        k = self.short
        n = self._s["n"][s].astype(np.int64)
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

    def _absorb(self, s: np.ndarray, x: np.ndarray, features: np.ndarray) -> None:
        """Learn one round (distinct slots); a sensor without a finite value learns nothing."""
        finite = np.isfinite(x)
        st = {name: values[s] for name, values in self._s.items()}
        n = st["n"]
        first = finite & (n == 0)
        rate = np.maximum(self.alpha, 1 / (n + 1))
        with np.errstate(invalid="ignore"):
            deviation = np.where(finite, x - st["location"], 0.0)
            step = np.where(finite & ~first, x - st["last"], 0.0)
            recent = np.where(finite, self._short_mean(s, x) - st["location"], 0.0)
        learn = finite & ~first
        for name, value, weight in (
            ("point_scale", _SIGMA_PER_MAD * np.abs(deviation), rate),
            ("mean_scale", _SIGMA_PER_MAD * np.abs(recent), rate),
            ("jump_scale", _SIGMA_PER_MAD * np.abs(step), rate),
            ("fast_var", deviation * deviation, np.maximum(self.fast, 1 / (n + 1))),
            ("slow_var", deviation * deviation, rate),
        ):
            st[name] = np.where(learn, st[name] + weight * (value - st[name]), st[name])
        st["location"] = np.where(first, x, np.where(learn, st["location"] + rate * deviation,
                                                     st["location"]))
        st["last"] = np.where(finite, x, st["last"])
        # The first values' features are measured against scales from a handful of readings and
        # run wild; kept in the histogram they would make later real anomalies look ordinary.
        counted = np.isfinite(features).all(axis=2) & (n >= self.warmup // 4)
        hist = self._hist[s]
        keep = np.where(counted, 1 - self.decay, 1.0)
        hist *= keep[..., None, None]
        st["weight"] = st["weight"] * keep + counted
        r, j = np.nonzero(counted)
        b = np.searchsorted(EDGES, features[r, j], side="right") - 1
        hist[r[:, None], j[:, None], np.arange(_F)[None, :], b] += 1
        self._hist[s] = hist
        ring = self._ring[s]
        rr, jj = np.nonzero(finite)
        ring[rr, jj, (n[rr, jj].astype(np.int64)) % self.short] = x[rr, jj]
        self._ring[s] = ring
        st["n"] = n + finite
        for name, values in st.items():
            self._s[name][s] = values

    def _ensure(self, stations: int) -> None:
        for name in _SCALARS:
            self._s[name] = grow(self._s[name], stations, 0.0)
        self._ring = grow(self._ring, stations, 0.0)
        self._hist = grow(self._hist, stations, 0.0)
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
                        "hist": self._hist[slot, j].tolist(),
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
                self._hist[slot, j] = sensor["hist"] if sensor else 0.0
            self._peak[slot] = state["peak"]
        self.alarm.restore(snapshot["alarm"])


def _quantile(cum: np.ndarray, total: np.ndarray, q: float) -> np.ndarray:
    """Upper edge of the bin holding quantile `q` of each histogram (cumulative counts)."""
    k = np.argmax(cum >= q * total[..., None], axis=3)
    return EDGES[np.minimum(k + 1, _BINS - 1)]
