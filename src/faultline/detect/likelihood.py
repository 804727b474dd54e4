"""Anomaly likelihood and alarms: from raw scores on any scale to calibrated, non-flickering alarms.

`AnomalyLikelihood` follows Numenta's anomaly likelihood: the mean of a station's last `short` raw
scores is compared with the long-run distribution of that same short-window mean (an exponentially
weighted mean and variance over about `long` readings, so each reading costs O(1)). The tail
probability Q of that Gaussian says how unusual the recent scores are; the layer reports it as
*surprise* = -log10 Q (0 = ordinary, 3 = a one-in-a-thousand excursion) and as the probability
1 - Q. Surprise keeps its resolution where 1 - Q rounds to 1.0 in floating point.

`Alarm` turns a level (the surprise) into alarms with hysteresis: an alarm goes on when the level
reaches `on`, stays on for at least `min_duration` readings, and goes off once the level has been
below `off` for `clear` readings in a row. A long fault whose evidence comes and goes is therefore
one alarm, and a level hovering near `on` does not flicker.

`AlarmedDetector` stacks both on any detector. All state is per station, in arrays indexed through
`StationSlots`, so one round of readings (at most one per station) is a handful of numpy operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import log_ndtr

from faultline.detect.base import Detector, Scores
from faultline.detect.slots import StationSlots, grow, slot_rounds
from faultline.schema import STATION_ID

_LN10 = math.log(10.0)


def probability(surprise: np.ndarray) -> np.ndarray:
    """The calibrated anomaly probability 1 - Q for a surprise -log10 Q."""
    return -np.expm1(-np.asarray(surprise, np.float64) * _LN10)


class AnomalyLikelihood:
    """Per-station surprise of the recent mean raw score against its long-run distribution."""

    def __init__(
        self, short: int = 10, long: int = 2000, warmup: int = 150, min_std: float = 0.05
    ) -> None:
        if short < 1 or long < 2 or warmup < 2 or min_std <= 0:
            raise ValueError("need short >= 1, long >= 2, warmup >= 2 and min_std > 0")
        self.short, self.long, self.warmup, self.min_std = short, long, warmup, min_std
        self._slots = StationSlots()
        self._recent = np.zeros((0, short))  # ring of the last `short` raw scores
        self._next = np.zeros(0, np.int64)
        self._held = np.zeros(0, np.int64)  # raw scores seen (capped at `short`)
        self._count = np.zeros(0, np.int64)  # short-window means folded into the long run
        self._mean = np.zeros(0)
        self._var = np.zeros(0)

    def peek(self, stations: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Surprise of each raw score given the state (one row per station), without learning it.

        NaN where the station is warming up or the raw score is NaN.
        """
        return self._peek(self._slots.lookup(stations), raw)

    def update(self, stations: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Surprise of each raw score (as `peek`), then learn it; stations may repeat, in order."""
        slots = self._slots.assign(stations)
        self._ensure(len(self._slots))
        out = np.full(len(raw), np.nan)
        for rows in slot_rounds(slots):
            out[rows] = self._peek(slots[rows], raw[rows])
            self._absorb(slots[rows], raw[rows])
        return out

    def _peek(self, slots: np.ndarray, raw: np.ndarray) -> np.ndarray:
        out = np.full(len(raw), np.nan)
        ok = (slots >= 0) & ~np.isnan(raw)
        if not ok.any():
            return out
        s = slots[ok]
        recent = self._short_mean(s, raw[ok])
        ready = self._count[s] >= self.warmup
        std = np.maximum(np.sqrt(self._var[s]), self.min_std)
        z = (recent - self._mean[s]) / std
        out[np.flatnonzero(ok)[ready]] = -log_ndtr(-z[ready]) / _LN10
        return out

    def _short_mean(self, s: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Mean of the ring's newest `short - 1` scores and `raw`."""
        k = self.short
        held = np.minimum(self._held[s], k - 1)
        # The oldest score in a full ring is the one `raw` pushes out.
        total = self._recent[s].sum(axis=1)
        full = self._held[s] >= k
        total[full] -= self._recent[s[full], self._next[s[full]]]
        return (total + raw) / (held + 1)

    def _absorb(self, slots: np.ndarray, raw: np.ndarray) -> None:
        """Learn one round (distinct slots); NaN scores are skipped."""
        ok = ~np.isnan(raw)
        s = slots[ok]
        x = raw[ok]
        recent = self._short_mean(s, x)
        self._recent[s, self._next[s]] = x
        self._next[s] = (self._next[s] + 1) % self.short
        self._held[s] = np.minimum(self._held[s] + 1, self.short)
        # Exponentially weighted moments; early on the weight is 1/n, an exact running mean.
        n = self._count[s] + 1
        alpha = np.maximum(1.0 / n, 1.0 / self.long)
        delta = recent - self._mean[s]
        self._mean[s] += alpha * delta
        self._var[s] = (1 - alpha) * (self._var[s] + alpha * delta * delta)
        self._count[s] = n

    def _ensure(self, stations: int) -> None:
        self._recent = grow(self._recent, stations, 0.0)
        self._next = grow(self._next, stations, 0)
        self._held = grow(self._held, stations, 0)
        self._count = grow(self._count, stations, 0)
        self._mean = grow(self._mean, stations, 0.0)
        self._var = grow(self._var, stations, 0.0)

    def forget(self, stations: Sequence[str]) -> None:
        """Drop `stations`' state: each warms up again from its next raw score."""
        s = self._slots.release(stations)
        for array in (self._recent, self._next, self._held, self._count, self._mean, self._var):
            array[s] = 0

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        out = {}
        for station in self._slots.known(stations):
            s = self._slots.get(station)
            held, nxt = int(self._held[s]), int(self._next[s])
            ring = self._recent[s]
            recent = ring[:held] if held < self.short else np.r_[ring[nxt:], ring[:nxt]]
            out[station] = {
                "recent": recent.tolist(),
                "count": int(self._count[s]),
                "mean": float(self._mean[s]),
                "var": float(self._var[s]),
            }
        return out

    def restore(self, snapshot: dict[str, Any]) -> None:
        slots = self._slots.assign(np.array(list(snapshot), dtype=object))
        self._ensure(len(self._slots))
        for s, state in zip(slots, snapshot.values(), strict=True):
            recent = np.asarray(state["recent"], np.float64)[-self.short :]
            self._recent[s] = 0.0
            self._recent[s, : len(recent)] = recent
            self._held[s] = len(recent)
            self._next[s] = len(recent) % self.short
            self._count[s] = state["count"]
            self._mean[s] = state["mean"]
            self._var[s] = state["var"]


class Alarm:
    """Per-station alarms with hysteresis.

    On when the level reaches `on`. Off once the alarm has lasted `min_duration` readings and the
    level has stayed below `off` for the last `clear` readings (an off-delay, so a fault whose
    evidence comes and goes stays one alarm).
    """

    def __init__(
        self, on: float = 4.0, off: float = 2.0, min_duration: int = 30, clear: int = 10
    ) -> None:
        if not off < on or min_duration < 1 or clear < 1:
            raise ValueError("need off < on, min_duration >= 1 and clear >= 1")
        self.on, self.off, self.min_duration, self.clear = on, off, min_duration, clear
        self._slots = StationSlots()
        self._age = np.zeros(0, np.int64)  # readings since the alarm went on; 0 = no alarm
        self._quiet = np.zeros(0, np.int64)  # consecutive readings below `off` while on

    def peek(self, stations: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(active, onset) per reading (one per station) given the state, without changing it.

        A NaN level leaves a station as it was: no verdict is not a reason to end an alarm.
        """
        active, onset, _ = self._step(self._slots.lookup(stations), level)
        return active, onset

    def update(self, stations: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(active, onset) per reading, then move the state on; stations may repeat, in order."""
        slots = self._slots.assign(stations)
        self._age = grow(self._age, len(self._slots), 0)
        self._quiet = grow(self._quiet, len(self._slots), 0)
        active = np.zeros(len(level), bool)
        onset = np.zeros(len(level), bool)
        for rows in slot_rounds(slots):
            s = slots[rows]
            active[rows], onset[rows], quiet = self._step(s, level[rows])
            self._age[s] = np.where(active[rows], self._age[s] + 1, 0)
            self._quiet[s] = quiet
        return active, onset

    def _step(
        self, slots: np.ndarray, level: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        known = slots >= 0
        at = np.maximum(slots, 0)
        age = np.where(known, self._age[at], 0) if len(self._age) else np.zeros(len(slots), int)
        quiet = np.where(known, self._quiet[at], 0) if len(self._age) else np.zeros_like(age)
        was_on = age > 0
        with np.errstate(invalid="ignore"):
            starts = ~was_on & (level >= self.on)
            low = level < self.off
            high = level >= self.off
        quiet = np.where(was_on & low, quiet + 1, np.where(high, 0, quiet))
        ends = was_on & (age >= self.min_duration) & (quiet >= self.clear)
        active = (was_on & ~ends) | starts
        return active, starts, np.where(active, quiet, 0)

    def forget(self, stations: Sequence[str]) -> None:
        """Drop `stations`' alarms, as if never raised."""
        s = self._slots.release(stations)
        self._age[s] = 0
        self._quiet[s] = 0

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        out = {}
        for station in self._slots.known(stations):
            s = self._slots.get(station)
            out[station] = {"age": int(self._age[s]), "quiet": int(self._quiet[s])}
        return out

    def restore(self, snapshot: dict[str, Any]) -> None:
        slots = self._slots.assign(np.array(list(snapshot), dtype=object))
        self._age = grow(self._age, len(self._slots), 0)
        self._quiet = grow(self._quiet, len(self._slots), 0)
        for s, state in zip(slots, snapshot.values(), strict=True):
            self._age[s] = int(state["age"])
            self._quiet[s] = int(state["quiet"])


class AlarmedDetector(Detector):
    """Any detector's raw scores → surprise (the score) and hysteresis alarms (`is_anomaly`).

    The responsible sensors of an alarm are those the inner detector named on that reading, or,
    on readings where it named none, the last ones it named for the station.
    """

    name: ClassVar[str] = "alarmed"

    def __init__(
        self,
        inner: Detector,
        likelihood: AnomalyLikelihood | None = None,
        alarm: Alarm | None = None,
    ) -> None:
        super().__init__(inner.sensors)
        self.inner = inner
        self.likelihood = likelihood or AnomalyLikelihood()
        self.alarm = alarm or Alarm()
        self._slots = StationSlots()
        self._mask = np.zeros(0, np.int64)

    @property
    def version(self) -> str:
        return self.inner.version

    def score(self, frame: pd.DataFrame) -> Scores:
        raw = self.inner.score(frame)
        stations = frame[STATION_ID].to_numpy()
        surprise = self.likelihood.peek(stations, raw.score)
        active, _ = self.alarm.peek(stations, surprise)
        return self._verdict(stations, raw, surprise, active, learn=False)

    def learn(self, frame: pd.DataFrame) -> None:
        self.process(frame)

    def process(self, frame: pd.DataFrame) -> Scores:
        raw = self.inner.process(frame)
        stations = frame[STATION_ID].to_numpy()
        surprise = self.likelihood.update(stations, raw.score)
        active, _ = self.alarm.update(stations, surprise)
        return self._verdict(stations, raw, surprise, active, learn=True)

    def _verdict(
        self,
        stations: np.ndarray,
        raw: Scores,
        surprise: np.ndarray,
        active: np.ndarray,
        *,
        learn: bool,
    ) -> Scores:
        # An alarm outlasts readings without a verdict, but such a reading is not itself flagged.
        flagged = active & ~np.isnan(surprise)
        return Scores(surprise, flagged, self._responsible(stations, raw, flagged, learn=learn))

    def _responsible(
        self, stations: np.ndarray, raw: Scores, active: np.ndarray, *, learn: bool
    ) -> np.ndarray:
        named = np.where(raw.is_anomaly, raw.sensor_mask, 0)
        slots = self._slots.assign(stations) if learn else self._slots.lookup(stations)
        self._mask = grow(self._mask, len(self._slots), 0)
        out = named.copy()
        for rows in slot_rounds(slots) if learn else [np.arange(len(stations))]:
            s = slots[rows]
            last = np.where(s >= 0, self._mask[np.maximum(s, 0)], 0)
            out[rows] = np.where(named[rows] != 0, named[rows], last)
            if learn:
                self._mask[s] = out[rows]
        return np.where(active, out, 0)

    def forget(self, stations: Sequence[str]) -> None:
        self.inner.forget(stations)
        self.likelihood.forget(stations)
        self.alarm.forget(stations)
        self._mask[self._slots.release(stations)] = 0

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "inner": self.inner.snapshot(stations),
            "likelihood": self.likelihood.snapshot(stations),
            "alarm": self.alarm.snapshot(stations),
            "mask": {s: int(self._mask[self._slots.get(s)]) for s in self._slots.known(stations)},
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.inner.restore(snapshot["inner"])
        self.likelihood.restore(snapshot["likelihood"])
        self.alarm.restore(snapshot["alarm"])
        masks: dict[str, int] = snapshot["mask"]
        slots = self._slots.assign(np.array(list(masks), dtype=object))
        self._mask = grow(self._mask, len(self._slots), 0)
        self._mask[slots] = np.fromiter(masks.values(), np.int64, len(slots))
