"""A station model of the relations between its sensors: streaming PCA, T², Q and a smoothed view.

Per-sensor detectors judge each sensor against its own past, so two coupled sensors that
decouple while each stays in its usual range pass unnoticed. This detector keeps, per station,
an exponentially weighted mean and covariance of all its sensors (O(m²) per reading), and
from it a principal component model of the standardised readings: the components that explain
`variance` of the variance span the station's normal movement, the rest its relations.

Each reading is judged by three statistics of its standardised form z:

* Hotelling's T² = Σ t_k² / λ_k over the retained components t = Pᵀz (an unusual point within
  the normal subspace: a large but coordinated move);
* Q, the squared residual |z - P_k t_k|² outside them (a broken relation);
* the smoothed view D = sᵀ M⁺ s of s, an EWMA (weight `smoothing`) of z, against M, the second
  moment of s over learned readings (a MEWMA chart): a small shift that lasts, in a sensor or
  in a relation, adds up in s while the noise averages out, and M, which keeps all of s's
  small directions, holds the tight relations of a controlled plant (docs/decisions/0021).

Each statistic is read as a scaled χ² (g·χ²_h) whose mean and variance match those the statistic
had on the station's own learned readings, each judged before it was learned (out of sample),
by models fitted on at least `mature` readings per sensor; until `calibration` of them were
seen, T² is read as χ²_k, Q by Box's g and h, and the smoothed view not at all. The score is
-log10 of three times the smallest tail probability (the Bonferroni allowance for looking three
times). The sensors named responsible are those contributing at least half as much as the
largest contributor to the statistic that fired: squared residuals for Q, z_j (Σ_k⁻¹ z)_j for
T², s_j (M⁺ s)_j for the smoothed view.

A verdict lasts as long as the fault: `is_anomaly` is an alarm that goes on at `threshold` and
off only once `hold` readings in a row scored below `release`, and the smoothed view stays up
for as long as the shift it sums does.

The model does not learn a fault into its normal: up to `warmup` readings, ten per sensor or
`calibration`, whichever is most, it learns every reading with weight 1/n, then only readings it
does not flag, with weight 1/`memory` (the smoothed view's second moment and the calibrations
alike), so a long fault stays flagged as long as it lasts, and a slow drift is learned
only as fast as `memory` allows. Nor does it learn the readings within a fault that happen to keep
the relation: after a flag it learns again only once `calm` readings in a row went unflagged. The
components are refitted (one batched eigendecomposition) every `refit` readings learned. A missing
sensor is taken at its mean (its smoothed value stays as it was): it contributes nothing new and
is never named. No verdict (NaN) until a station has learned `warmup` readings; a reading with no
sensor at all changes no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import numpy as np
import pandas as pd
from scipy.special import chdtrc

from faultline.detect.base import Scores
from faultline.detect.per_station import PerStationDetector
from faultline.detect.slots import grow, sensor_values, slot_rounds

_DUMP_FORMAT = 2  # the layout of `dump`: raise it whenever the state arrays change shape
_TINY = 1e-12  # a standard deviation below this (relative to the level) is a constant sensor
_P_FLOOR = 1e-300  # tail probabilities are floored here: a score at most 300
_LOOKS = 3  # T², Q and the smoothed view: the Bonferroni allowance for looking three times
# An eigenvalue of the smoothed view's second moment below this share of the largest is taken
# as no variance at all (a constant sensor, or fewer readings than sensors): not inverted.
_RANK_FLOOR = 1e-10
VIEWS = ("t2", "q", "smooth")  # the statistics a reading is judged by, each calibrated
# Per station: readings in the smoothed view's second moment, and how many readings each
# model was fitted on (the raw model, the smoothed view's inverse).
_COUNT_FIELDS = ("n_smooth", "fit_raw", "fit_smooth")
_N_SMOOTH, _FIT_RAW, _FIT_SMOOTH = range(len(_COUNT_FIELDS))
_N, _MEAN, _SQUARE = range(3)  # per view: statistics calibrated, their mean and mean square


@dataclass(frozen=True)
class _Judged:
    """A round of readings judged, and the per-reading state judging them would leave."""

    score: np.ndarray  # NaN = no verdict
    anomaly: np.ndarray
    contributions: np.ndarray  # per sensor, to the statistic that fired
    present: np.ndarray  # sensors the reading has (and the model knows)
    smooth: np.ndarray  # the smoothed view after the reading
    views: np.ndarray  # (T², Q, the smoothed view's statistic) of each reading
    alarm: np.ndarray  # (on, readings in a row below `release`) after the reading


def _calibrated_tail(
    calib: np.ndarray, statistic: np.ndarray, prior: np.ndarray, needed: int
) -> np.ndarray:
    """The tail probability of `statistic` under a scaled χ² (g·χ²_h) with the mean and
    variance of the view's calibration; `prior` until `needed` statistics were calibrated."""
    mean, square = calib[:, _MEAN], calib[:, _SQUARE]
    var = square - mean * mean
    ready = np.flatnonzero((calib[:, _N] >= needed) & (mean > 0) & (var > 0))
    out = prior.copy()
    if len(ready):  # only where calibrated: the tail function is a large share of the work
        mean, var = mean[ready], var[ready]
        g, h = var / (2 * mean), 2 * mean * mean / var
        with np.errstate(invalid="ignore"):
            out[ready] = chdtrc(h, np.maximum(statistic[ready], 0.0) / g)
    return out


def _pseudo_inverse(moment: np.ndarray, ready: np.ndarray) -> np.ndarray:
    """The pseudo-inverses of symmetric `moment` matrices; zero where not `ready`."""
    eig, vec = np.linalg.eigh(moment)
    floor = _RANK_FLOOR * np.maximum(eig.max(axis=1, initial=0.0), _TINY)[:, None]
    inv = np.where(eig > floor, 1.0 / np.where(eig > floor, eig, 1.0), 0.0)
    out = np.einsum("sij,sj,skj->sik", vec, inv, vec)
    return np.where(ready[:, None, None], out, 0.0)


class RelationsDetector(PerStationDetector):
    """Streaming PCA of a station's sensors; T² and Q, and a smoothed view, as one score."""

    name: ClassVar[str] = "relations"

    def __init__(
        self,
        sensors: Sequence[str],
        *,
        threshold: float = 4.0,
        warmup: int = 100,
        memory: int = 5000,
        variance: float = 0.9,
        refit: int = 50,
        calm: int = 50,
        smoothing: float = 0.5,
        calibration: int = 250,
        mature: float = 3.0,
        release: float = 2.0,
        hold: int = 3,
    ) -> None:
        super().__init__(sensors)
        if len(self.sensors) > 62:
            raise ValueError("at most 62 sensors: the responsible ones are bits of an int64")
        if warmup < 2 or refit < 1 or calm < 0 or memory < warmup:
            raise ValueError("need warmup >= 2, refit >= 1, calm >= 0 and memory >= warmup")
        if not (0 < variance <= 1 and threshold > 0):
            raise ValueError("variance must lie in (0, 1] and threshold be positive")
        if not (0 < smoothing <= 1 and calibration >= 1 and 0 < release <= threshold):
            raise ValueError(
                "need smoothing in (0, 1], calibration >= 1, release in (0, threshold]"
            )
        if hold < 0 or mature < 0:
            raise ValueError("hold and mature must be >= 0")
        self.threshold, self.warmup, self.memory = threshold, warmup, memory
        self.variance, self.refit, self.calm = variance, refit, calm
        self.smoothing, self.calibration, self.mature = smoothing, calibration, mature
        self.release, self.hold = release, hold
        # A covariance of m sensors from fewer than about 10·m readings is mostly noise: a
        # model judging by it flags ordinary readings and, learning no flagged one, would keep
        # its noise. So a station learns every reading until it has `settle` of them, and at
        # least as many as its views' calibration needs: a 3-sensor station that slowed its
        # learning after 100 readings raised 87-246 false alarms per simulated station-day
        # against 21 (docs/decisions/0021).
        self.settle = max(warmup, 10 * len(self.sensors), calibration)
        m = len(self.sensors)
        # Learned state: readings learned, learned since the last fit, mean, covariance.
        self._count = np.zeros(0)
        self._since = np.zeros(0)
        self._mean = np.zeros((0, m))
        self._cov = np.zeros((0, m, m))
        # The fitted model: scale, components (columns), eigenvalues, retained components,
        # and Box's (g, h) for Q; all zero until the first fit.
        self._scale = np.zeros((0, m))
        self._axes = np.zeros((0, m, m))
        self._eig = np.zeros((0, m))
        self._keep = np.zeros((0, m))
        self._box = np.zeros((0, 2))
        # The smoothed view: the EWMA of the standardised readings, the second moment of it
        # over learned readings and its (pseudo-)inverse as of the last fit.
        self._smooth = np.zeros((0, m))
        self._smooth_cov = np.zeros((0, m, m))
        self._smooth_inv = np.zeros((0, m, m))
        self._counts = np.zeros((0, len(_COUNT_FIELDS)))
        # Each view's calibration: how many statistics, their mean and mean square.
        self._calib = np.zeros((0, len(VIEWS), 3))
        # Readings judged since the station's last flagged one; the alarm (on, readings in a
        # row below `release` while on).
        self._quiet = np.zeros(0)
        self._alarm = np.zeros((0, 2))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "count": self._count,
            "since": self._since,
            "mean": self._mean,
            "cov": self._cov,
            "scale": self._scale,
            "axes": self._axes,
            "eig": self._eig,
            "keep": self._keep,
            "box": self._box,
            "smooth": self._smooth,
            "smooth_cov": self._smooth_cov,
            "smooth_inv": self._smooth_inv,
            "counts": self._counts,
            "calib": self._calib,
            "quiet": self._quiet,
            "alarm": self._alarm,
        }

    def _ensure_rows(self, rows: int) -> None:
        for name, array in self._arrays().items():
            setattr(self, f"_{name}", grow(array, rows, 0.0))

    def _reset_rows(self, rows: np.ndarray) -> None:
        for array in self._arrays().values():
            array[rows] = 0.0

    # -- judging ---------------------------------------------------------------------------

    def _statistics(self, slots: np.ndarray, x: np.ndarray) -> _Judged:
        """How readings `x` of `slots` are judged, and the state they would leave; no change."""
        scale = self._scale[slots]
        present = np.isfinite(x) & (scale > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(present, (x - self._mean[slots]) / np.where(scale > 0, scale, 1), 0.0)
        axes, eig, keep = self._axes[slots], self._eig[slots], self._keep[slots]
        t = np.einsum("sjk,sj->sk", axes, z)
        inv = np.where(keep > 0, 1.0 / np.maximum(eig, _TINY), 0.0)
        t2 = (t * t * inv).sum(axis=1)
        inside = np.einsum("sjk,sk->sj", axes, t * keep)
        residual = z - inside
        q = (residual * residual).sum(axis=1)
        k = keep.sum(axis=1)
        g, h = self._box[slots, 0], self._box[slots, 1]
        # Before a view is calibrated, T² is read as χ²_k and Q as Box's g·χ²_h.
        p_t = np.where(k > 0, chdtrc(np.maximum(k, 1), t2), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_q = np.where(h > 0, chdtrc(np.maximum(h, _TINY), q / np.maximum(g, _TINY)), 1.0)
        calib = self._calib[slots]
        p_t = _calibrated_tail(calib[:, 0], t2, p_t, self.calibration)
        p_q = _calibrated_tail(calib[:, 1], q, p_q, self.calibration)
        # The smoothed view: a missing sensor keeps its smoothed value (it said nothing new).
        old = self._smooth[slots]
        smooth = np.where(present, old + self.smoothing * (z - old), old)
        pulled = np.einsum("sjk,sk->sj", self._smooth_inv[slots], smooth)
        d = (smooth * pulled).sum(axis=1)
        p_s = _calibrated_tail(calib[:, 2], d, np.ones_like(d), self.calibration)
        p = np.maximum(np.minimum(np.minimum(p_t, p_q), p_s), _P_FLOOR)
        score = np.maximum(-np.log10(_LOOKS * p), 0.0)
        t2_part = z * np.einsum("sjk,sk->sj", axes, t * inv)
        contributions = np.where(
            (p_s <= np.minimum(p_t, p_q))[:, None],
            smooth * pulled,
            np.where((p_q < p_t)[:, None], residual * residual, t2_part),
        )
        judged = (self._count[slots] >= self.warmup) & present.any(axis=1)
        score = np.where(judged, score, np.nan)
        # The alarm: on at `threshold`, off once `hold` readings in a row fell below `release`.
        on, low = self._alarm[slots, 0] > 0, self._alarm[slots, 1]
        fire = score >= self.threshold  # False for NaN
        low = np.where(fire, 0.0, np.where(on & (score < self.release), low + 1, 0.0))
        on = fire | (on & (low <= self.hold - 1))
        low = np.where(on, low, 0.0)
        alarm = np.stack([on.astype(np.float64), low], axis=1)
        anomaly = judged & on
        # Readings with no verdict leave the smoothed view and the alarm as they were.
        smooth = np.where(judged[:, None], smooth, old)
        alarm = np.where(judged[:, None], alarm, self._alarm[slots])
        views = np.stack([t2, q, d], axis=1)
        return _Judged(score, anomaly, contributions, present, smooth, views, alarm)

    def _judge(self, slots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._verdict(self._statistics(slots, x))

    def _verdict(self, judged: _Judged) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        contributions, present = judged.contributions, judged.present
        top = np.where(present, contributions, 0.0).max(axis=1, initial=0.0)
        named = present & (contributions > 0) & (contributions >= 0.5 * top[:, None])
        bits = (named & judged.anomaly[:, None]).astype(np.int64) << np.arange(len(self.sensors))
        return judged.score, judged.anomaly, bits.sum(axis=1)

    # -- learning --------------------------------------------------------------------------

    def process(self, frame: pd.DataFrame) -> Scores:
        # PerStationDetector's rounds, judging each reading once for its verdict and its
        # learning alike: the same verdicts as score-then-learn at half the work.
        slots = self._assign(frame)
        x = sensor_values(frame, self.sensors)
        out = Scores.empty(len(frame))
        for rows in slot_rounds(slots):
            mine = slots[rows]
            judged = self._statistics(mine, x[rows])
            out.score[rows], out.is_anomaly[rows], out.sensor_mask[rows] = self._verdict(judged)
            self._absorb(mine, x[rows], judged)
        return out

    def _absorb(self, slots: np.ndarray, x: np.ndarray, judged: _Judged | None = None) -> None:
        if judged is None:
            judged = self._statistics(slots, x)
        self._smooth[slots] = judged.smooth
        self._alarm[slots] = judged.alarm
        seen = np.isfinite(x).any(axis=1)
        count = self._count[slots]
        warming = count < self.settle
        verdict = np.isfinite(judged.score)
        if (~warming).any():
            # Once the model stands it learns only a reading it does not flag, in a calm spell
            # of `calm` readings without a flag: the quiet readings within a fault (those
            # where the broken relation happens to hold) are not learned either.
            quiet = self._quiet[slots]
            seen &= warming | (verdict & ~judged.anomaly & (quiet >= self.calm))
            self._quiet[slots] = np.where(judged.anomaly, 0.0, np.where(verdict, quiet + 1, quiet))
        keep = np.flatnonzero(seen)
        slots, x, count = slots[keep], x[keep], count[keep] + 1
        if len(slots) == 0:
            return
        settled = count > self.settle
        self._learn_views(slots, judged.smooth[keep], judged.views[keep], verdict[keep], settled)
        w = np.where(count <= self.settle, 1.0 / count, 1.0 / self.memory)
        mean = self._mean[slots]
        d = np.where(np.isfinite(x), x - mean, 0.0)
        self._mean[slots] = mean + w[:, None] * d
        outer = d[:, :, None] * d[:, None, :]
        self._cov[slots] = (1 - w)[:, None, None] * (self._cov[slots] + w[:, None, None] * outer)
        self._count[slots] = count
        self._since[slots] += 1
        due = (count >= self.warmup) & ((count == self.warmup) | (self._since[slots] >= self.refit))
        if due.any():
            self._fit(slots[due])

    def _learn_views(
        self,
        slots: np.ndarray,
        smooth: np.ndarray,
        views: np.ndarray,
        verdict: np.ndarray,
        settled: np.ndarray,
    ) -> None:
        """Learn what the views need of readings judged by a fitted model (before the first
        fit the readings are not standardised yet): the smoothed view's second moment, and
        each view's calibration from statistics of models fitted on `mature` readings per
        sensor. Each statistic was computed before its reading was learned, so calibration
        sees the out-of-sample spread that an in-sample fit would understate."""
        slots, smooth, views = slots[verdict], smooth[verdict], views[verdict]
        settled = settled[verdict]
        counts = self._counts[slots]
        n = counts[:, _N_SMOOTH] + 1
        # Like the model, the second moment learns at 1/`memory` once the station has settled
        # (and it holds `calibration` readings), so an unflagged slow drift is not learned.
        slow = settled & (n > self.calibration)
        w = np.where(slow, 1.0 / self.memory, 1.0 / n)[:, None, None]
        outer = smooth[:, :, None] * smooth[:, None, :]
        self._smooth_cov[slots] += w * (outer - self._smooth_cov[slots])
        counts[:, _N_SMOOTH] = n
        self._counts[slots] = counts
        # The calibration forgets at 1/`calibration`, so the models of the first fits, which
        # judge worse than the later ones, soon stop counting.
        floor = self.mature * len(self.sensors)
        mature = np.stack(
            [counts[:, _FIT_RAW] >= floor] * 2 + [counts[:, _FIT_SMOOTH] >= floor], axis=1
        )
        calib = self._calib[slots]
        seen = calib[:, :, _N] + mature
        # The first `calibration` statistics weigh alike (a station that settles sooner still
        # gets a full sample); then 1/`calibration` while it settles, 1/`memory` after.
        later = np.where(settled[:, None], 1.0 / self.memory, 1.0 / self.calibration)
        rate = np.where(seen <= self.calibration, 1.0 / np.maximum(seen, 1), later)
        v = np.where(mature, rate, 0.0)
        calib[:, :, _MEAN] += v * (views - calib[:, :, _MEAN])
        calib[:, :, _SQUARE] += v * (views * views - calib[:, :, _SQUARE])
        calib[:, :, _N] = seen
        self._calib[slots] = calib

    def _fit(self, slots: np.ndarray) -> None:
        """Refit the components of `slots` from their covariance (one batched eigh)."""
        cov = self._cov[slots]
        var = np.diagonal(cov, axis1=1, axis2=2)
        level = np.abs(self._mean[slots]) + 1.0
        usable = var > (_TINY * level) ** 2
        scale = np.where(usable, np.sqrt(np.where(usable, var, 1.0)), 0.0)
        safe = np.where(usable, scale, 1.0)
        corr = cov / (safe[:, :, None] * safe[:, None, :])
        both = usable[:, :, None] & usable[:, None, :]
        corr = np.where(both, corr, 0.0)
        eig, axes = np.linalg.eigh(corr)
        eig, axes = np.maximum(eig[:, ::-1], 0.0), axes[:, :, ::-1]
        total = eig.sum(axis=1, keepdims=True)
        share = np.cumsum(eig, axis=1) / np.where(total > 0, total, 1.0)
        # The fewest leading components reaching `variance`: those whose predecessors fall short.
        before = np.concatenate([np.zeros((len(slots), 1)), share[:, :-1]], axis=1)
        keep = (before < self.variance - 1e-12) & (eig > 0)
        rest = np.where(keep, 0.0, eig)
        theta1, theta2 = rest.sum(axis=1), (rest * rest).sum(axis=1)
        has_rest = theta2 > _TINY
        g = np.where(has_rest, theta2 / np.where(has_rest, theta1, 1.0), 0.0)
        h = np.where(has_rest, theta1**2 / np.where(has_rest, theta2, 1.0), 0.0)
        self._scale[slots] = scale
        self._axes[slots] = axes
        self._eig[slots] = eig
        self._keep[slots] = keep
        self._box[slots] = np.stack([g, h], axis=1)
        n_smooth = self._counts[slots, _N_SMOOTH]
        ready = n_smooth > len(self.sensors)
        self._smooth_inv[slots] = _pseudo_inverse(self._smooth_cov[slots], ready)
        self._counts[slots, _FIT_RAW] = self._count[slots]
        self._counts[slots, _FIT_SMOOTH] = np.where(ready, n_smooth, 0.0)
        self._since[slots] = 0.0
        first = self._count[slots] == self.warmup
        self._quiet[slots[first]] = self.calm  # the warm-up readings were a calm spell

    # -- state -----------------------------------------------------------------------------

    def dump(self, stations: Sequence[str] | None = None) -> bytes:
        """The chosen stations' rows of each state array as raw float64 bytes."""
        chosen = self._slots.known(stations)
        rows = np.fromiter((self._slots.get(s) for s in chosen), np.int64, len(chosen))
        return msgspec.msgpack.encode(
            {
                "format": _DUMP_FORMAT,
                "sensors": list(self.sensors),
                "stations": chosen,
                **{name: array[rows].tobytes() for name, array in self._arrays().items()},
            }
        )

    def load(self, data: bytes) -> None:
        try:
            dump = msgspec.msgpack.decode(data)
            if dump.get("format") != _DUMP_FORMAT:
                raise ValueError(f"format {dump.get('format')!r}, not {_DUMP_FORMAT}")
            if dump["sensors"] != list(self.sensors):
                raise ValueError(f"sensors {dump['sensors']}, not {list(self.sensors)}")
            stations = [str(s) for s in dump["stations"]]
            arrays = {
                name: np.frombuffer(dump[name], np.float64).reshape(
                    (len(stations), *array.shape[1:])
                )
                for name, array in self._arrays().items()
            }
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # Refused whole, before any station changes.
            raise ValueError(f"not a relations dump this detector can load: {exc}") from exc
        self._put(stations, arrays)

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        chosen = self._slots.known(stations)
        return {
            "sensors": list(self.sensors),
            "stations": {
                s: {
                    name: array[self._slots.get(s)].tolist()
                    for name, array in self._arrays().items()
                }
                for s in chosen
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot["sensors"] != list(self.sensors):
            raise ValueError(f"snapshot of sensors {snapshot['sensors']}, not {self.sensors}")
        stations: dict[str, Any] = snapshot["stations"]
        try:
            arrays = {
                name: np.array([state[name] for state in stations.values()], np.float64).reshape(
                    (len(stations), *array.shape[1:])
                )
                for name, array in self._arrays().items()
            }
        except ValueError as exc:
            raise ValueError(f"malformed relations snapshot: {exc}") from exc
        self._put(list(stations), arrays)

    def _put(self, stations: list[str], arrays: dict[str, np.ndarray]) -> None:
        rows = self._slots.assign(np.array(stations, dtype=object))
        self._ensure_rows(len(self._slots))
        for name, array in self._arrays().items():
            array[rows] = arrays[name]
