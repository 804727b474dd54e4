"""Per-sensor streaming detector: robust exponentially weighted location and scale per station.

Each (station, sensor) keeps three numbers: how many values it has learned, an exponentially
weighted mean (location) and an exponentially weighted mean absolute deviation (scale). A
reading's z is its distance from the location in scales; the row's score is the largest z over
its sensors. Deviations are winsorised before they are learned, so a spike moves the baseline by
at most `CLIP_SCALES` scales times alpha instead of dragging it towards the outlier.

Until a (station, sensor) has learned `warmup` values its estimates are plain running means (the
weight of a new value is max(alpha, 1/n)), so the baseline does not depend on a zero start, and
its z is NaN: no verdict, never an anomaly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from faultline.detect.per_station import PerStationDetector
from faultline.detect.slots import grow

# E|X - mean| = sigma * sqrt(2/pi) for normal data: scaling the mean absolute deviation by
# sqrt(pi/2) makes the scale a standard deviation, so the threshold reads in sigmas.
SIGMA_PER_MEAN_ABS_DEV = math.sqrt(math.pi / 2)
# Deviations beyond 3 scales are clipped before learning: normal data is hardly touched (0.3 %),
# an outlier's pull on location and scale is bounded, and a genuine level or variance change is
# still followed, only more slowly.
CLIP_SCALES = 3.0
# A constant signal has zero spread. The floor stands in for the resolution of a real sensor
# (about 0.1 % of its reading), below which a change is indistinguishable from quantisation;
# the absolute part covers signals that sit at zero.
SCALE_FLOOR_RELATIVE = 1e-3
SCALE_FLOOR_ABSOLUTE = 1e-6


class RobustStreamingDetector(PerStationDetector):
    """z = |x - EWMA location| / EW mean-absolute-deviation scale, per station and sensor."""

    name: ClassVar[str] = "robust_z"

    def __init__(
        self,
        sensors: Sequence[str],
        threshold: float = 6.0,
        warmup: int = 30,
        alpha: float = 0.02,
    ) -> None:
        super().__init__(sensors)
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2 values (a scale needs two), got {warmup}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        self.threshold = threshold
        self.warmup = warmup
        self.alpha = alpha
        k = len(self.sensors)
        self._count = np.zeros((0, k), np.int64)
        self._location = np.zeros((0, k))
        self._scale = np.zeros((0, k))
        self._bits = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        names = self._slots.stations if stations is None else stations
        state: dict[str, Any] = {}
        for station in names:
            if station not in self._slots:
                continue
            row = self._slots.get(station)
            state[station] = {
                "count": self._count[row].tolist(),
                "location": self._location[row].tolist(),
                "scale": self._scale[row].tolist(),
            }
        return {"sensors": list(self.sensors), "stations": state}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load per-station state; sensors are matched by name, unknown ones start afresh."""
        sensors, stations = _parse_snapshot(snapshot)
        columns = [self.sensors.index(s) if s in self.sensors else -1 for s in sensors]
        taken = np.array([c for c in columns if c >= 0], np.int64)
        source = np.array([i for i, c in enumerate(columns) if c >= 0], np.int64)
        slots = self._slots.assign(np.array(list(stations), dtype=object))
        self._ensure_rows(len(self._slots))
        for row, (count, location, scale) in zip(slots, stations.values(), strict=True):
            self._count[row] = 0
            self._location[row] = 0.0
            self._scale[row] = 0.0
            self._count[row, taken] = count[source]
            self._location[row, taken] = location[source]
            self._scale[row, taken] = scale[source]

    def _floor(self, location: np.ndarray) -> np.ndarray:
        return SCALE_FLOOR_ABSOLUTE + SCALE_FLOOR_RELATIVE * np.abs(location)

    def _judge(self, slots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        location = self._location[slots]
        scale = np.maximum(self._scale[slots], self._floor(location))
        judged = (self._count[slots] >= self.warmup) & np.isfinite(x)
        with np.errstate(invalid="ignore"):
            z = np.where(judged, np.abs(x - location) / scale, np.nan)
        over = z > self.threshold
        # fmax ignores NaN, so a row has a score as soon as one of its sensors has a verdict.
        score: np.ndarray = np.fmax.reduce(z, axis=1)
        anomaly: np.ndarray = np.logical_or.reduce(over, axis=1)
        return score, anomaly, over @ self._bits

    def _absorb(self, slots: np.ndarray, x: np.ndarray) -> None:
        """Learn one value per station (`slots` unique); non-finite values are skipped."""
        finite = np.isfinite(x)
        count = self._count[slots]
        location = self._location[slots]
        scale = self._scale[slots]
        seen = count + finite
        # Weights are max(alpha, 1/n): a running mean while young, an EWMA once mature. The scale
        # averages deviations, of which there is one fewer than values.
        weight = np.maximum(self.alpha, 1.0 / np.maximum(seen, 1))
        scale_weight = np.where(seen >= 2, np.maximum(self.alpha, 1.0 / np.maximum(seen - 1, 1)), 0)
        with np.errstate(invalid="ignore"):
            deviation = np.where(finite, x - location, 0.0)
        limit = CLIP_SCALES * np.maximum(scale, self._floor(location))
        mature = count >= self.warmup
        deviation = np.where(mature, np.clip(deviation, -limit, limit), deviation)
        new_location = location + weight * deviation
        new_scale = scale + scale_weight * (SIGMA_PER_MEAN_ABS_DEV * np.abs(deviation) - scale)
        self._count[slots] = seen
        self._location[slots] = np.where(finite, new_location, location)
        self._scale[slots] = np.where(finite, new_scale, scale)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._count[rows] = 0
        self._location[rows] = 0.0
        self._scale[rows] = 0.0

    def _ensure_rows(self, rows: int) -> None:
        self._count = grow(self._count, rows, 0)
        self._location = grow(self._location, rows, 0.0)
        self._scale = grow(self._scale, rows, 0.0)


def _parse_snapshot(
    snapshot: dict[str, Any],
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Validate a snapshot; a bad one is refused whole so no station is half-restored."""
    try:
        sensors = [str(s) for s in snapshot["sensors"]]
        raw = snapshot["stations"]
        parsed = {}
        for station, state in raw.items():
            count = np.asarray(state["count"], dtype=np.float64)
            location = np.asarray(state["location"], dtype=np.float64)
            scale = np.asarray(state["scale"], dtype=np.float64)
            shapes = {count.shape, location.shape, scale.shape}
            if shapes != {(len(sensors),)}:
                raise ValueError(f"station {station!r}: expected {len(sensors)} values per field")
            if not all(np.isfinite(a).all() for a in (count, location, scale)):
                raise ValueError(f"station {station!r}: non-finite state")
            if (count < 0).any() or (count != np.round(count)).any() or (scale < 0).any():
                raise ValueError(f"station {station!r}: negative or fractional count, or scale")
            parsed[str(station)] = (count.astype(np.int64), location, scale)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed robust_z snapshot: {exc!r}") from exc
    return sensors, parsed
