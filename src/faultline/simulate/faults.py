"""The faults the simulator can inject, how each is drawn, and what each does to a signal.

Sizes are in units of the sensor's configured spread (std), so a fault is equally visible on every
sensor, except seed 003's malfunction, whose exponential noise has an absolute mean (≈ 33).
Durations are in seconds of station time and are turned into ticks with the simulator's tick
length, so at 1 Hz a fault lasts tens of seconds to minutes.

Two kinds are visible in no single sensor: on a station whose sensors follow its load
(`SensorSpec.load_coupling`), `decouple` makes one sensor stop following it (its share of the
load is replaced by an independent walk of the same spread, as a sensor torn off its machine
still reads the room) and `reversed` makes it follow the load the wrong way (as a swapped pair
of wires). Each leaves the sensor's mean, spread and correlation time exactly as they were;
only its relation to the station's other sensors changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from faultline.schema import FaultLabel

STATION_WIDE = "*"  # the FaultLabel sensor of faults that hit the whole station
MALFUNCTION_NOISE_MEAN = 33.0  # seed 003: failing assets emit exponential noise of this mean


class FaultKind(StrEnum):
    SPIKE = "spike"  # one reading far off
    LEVEL_SHIFT = "level_shift"  # a constant offset for a while
    DRIFT = "drift"  # an offset growing linearly from zero
    STUCK = "stuck"  # the value frozen at what it was when the fault began
    VARIANCE = "variance"  # the same level, a much wider spread
    MALFUNCTION = "malfunction"  # seed 003: a steady signal plus exponential noise
    DROPOUT = "dropout"  # the station sends nothing
    DECOUPLE = "decouple"  # a sensor stops following its station's load
    REVERSED = "reversed"  # a sensor follows its station's load the wrong way round


# The kinds that need a sensor coupled to its station's load, and change nothing else.
RELATION_KINDS = frozenset({FaultKind.DECOUPLE, FaultKind.REVERSED})


@dataclass(frozen=True, slots=True)
class FaultShape:
    """How one kind is drawn: duration range in seconds, size range in stds (variance: a factor)."""

    min_s: float
    max_s: float
    min_size: float = 0.0
    max_size: float = 0.0


FAULT_SHAPES: Mapping[FaultKind, FaultShape] = {
    FaultKind.SPIKE: FaultShape(0.0, 0.0, 8.0, 10.0),  # always exactly one reading
    FaultKind.LEVEL_SHIFT: FaultShape(30.0, 300.0, 4.0, 6.0),
    FaultKind.DRIFT: FaultShape(120.0, 600.0, 6.0, 8.0),  # size is the offset reached at the end
    FaultKind.STUCK: FaultShape(30.0, 180.0),
    FaultKind.VARIANCE: FaultShape(30.0, 180.0, 4.0, 5.0),  # size multiplies the std
    FaultKind.MALFUNCTION: FaultShape(30.0, 300.0),
    FaultKind.DROPOUT: FaultShape(20.0, 180.0),
    # Long enough to span several correlation times: a relation shows over many readings.
    FaultKind.DECOUPLE: FaultShape(120.0, 600.0),
    FaultKind.REVERSED: FaultShape(120.0, 600.0),
}

# Spikes are the commonest fault in plant data; each other kind shows up now and then.
DEFAULT_FAULT_WEIGHTS: Mapping[FaultKind, float] = {
    FaultKind.SPIKE: 3.0,
    FaultKind.LEVEL_SHIFT: 2.0,
    FaultKind.DRIFT: 1.0,
    FaultKind.STUCK: 1.0,
    FaultKind.VARIANCE: 1.0,
    FaultKind.MALFUNCTION: 1.0,
    FaultKind.DROPOUT: 1.0,
}
# Added to the defaults on a station with coupled sensors.
RELATION_FAULT_WEIGHTS: Mapping[FaultKind, float] = {
    FaultKind.DECOUPLE: 1.0,
    FaultKind.REVERSED: 1.0,
}


def fault_kinds(coupled: bool) -> tuple[FaultKind, ...]:
    """The kinds a simulator can inject: the relation kinds only when some sensor is coupled."""
    return tuple(k for k in FaultKind if coupled or k not in RELATION_KINDS)


def weight_table(
    weights: Mapping[str, float] | None, coupled: bool = False
) -> tuple[tuple[FaultKind, ...], np.ndarray]:
    """Validated kinds and their cumulative probabilities (for drawing with one uniform).

    `coupled` says whether some sensor follows the station's load, which the relation kinds need.
    """
    if weights is None:
        defaults = {**DEFAULT_FAULT_WEIGHTS, **(RELATION_FAULT_WEIGHTS if coupled else {})}
        chosen: Mapping[str, float] = {k.value: w for k, w in defaults.items()}
    else:
        chosen = weights
    kinds: list[FaultKind] = []
    values: list[float] = []
    for name, weight in chosen.items():
        try:
            kind = FaultKind(name)
        except ValueError:
            valid = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault kind {name!r}: valid kinds are {valid}") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"fault weight for {kind.value} must be a finite number >= 0")
        if kind in RELATION_KINDS and weight > 0 and not coupled:
            raise ValueError(
                f"fault kind {kind.value} needs sensors that follow their station's load: "
                "give some sensor a load_coupling"
            )
        kinds.append(kind)
        values.append(weight)
    total = sum(values)
    if total <= 0:
        raise ValueError("fault weights must give at least one kind a positive weight")
    cumulative = np.cumsum(values) / total
    cumulative[-1] = 1.0
    return tuple(kinds), cumulative


@dataclass(slots=True)
class Fault:
    """One injected fault on one station, over ticks [start, end] (both inclusive)."""

    kind: FaultKind
    station: int
    sensor: int  # column in the sensor order; -1 when the whole station is hit
    start: int
    end: int
    offset: float = 0.0  # spike value from the mean, level shift, or drift's final offset
    # Per-tick extra noise (variance) or the whole signal above the mean (malfunction).
    noise: np.ndarray = field(default_factory=lambda: np.empty(0))
    held: float = math.nan  # the stuck value, taken at the first tick
    start_ts: int = 0

    def apply(
        self,
        values: np.ndarray,
        present: np.ndarray,
        ts: np.ndarray,
        first: int,
        mean: np.ndarray,
        load: np.ndarray | None = None,
        load_share: np.ndarray | None = None,
    ) -> None:
        """Change this block's (tick, station, sensor) `values` and `present` where the fault acts.

        `first` is the tick of the block's first row and `ts` its event times; `load` is the
        block's (tick, station) load in units of its spread and `load_share` each sensor's part
        of it (coupling * std), which the relation kinds take out or turn round (only they
        need them).
        """
        lo = max(self.start, first)
        hi = min(self.end, first + len(values) - 1)
        if lo > hi:
            return
        if self.start >= first:
            self.start_ts = int(ts[self.start - first])
        rows = slice(lo - first, hi - first + 1)
        along = slice(lo - self.start, hi - self.start + 1)  # position inside the fault
        s, k = self.station, self.sensor
        kind = self.kind
        if kind is FaultKind.DROPOUT:
            present[rows, s] = False
        elif kind is FaultKind.SPIKE:
            values[rows, s, k] = mean[k] + self.offset
        elif kind is FaultKind.LEVEL_SHIFT:
            values[rows, s, k] += self.offset
        elif kind is FaultKind.DRIFT:
            steps = np.arange(lo - self.start + 1, hi - self.start + 2)
            values[rows, s, k] += self.offset * steps / (self.end - self.start + 1)
        elif kind is FaultKind.STUCK:
            if self.start >= first:
                self.held = float(values[self.start - first, s, k])
            values[rows, s, k] = self.held
        elif kind is FaultKind.VARIANCE:
            values[rows, s, k] += self.noise[along]
        elif kind in RELATION_KINDS:
            if load is None or load_share is None:
                raise ValueError(f"a {kind.value} fault needs the station's load")
            if kind is FaultKind.DECOUPLE:
                values[rows, s, k] += load_share[k] * (self.noise[along] - load[rows, s])
            else:
                values[rows, s, k] -= 2.0 * load_share[k] * load[rows, s]
        else:
            values[rows, s, k] = mean[k] + self.noise[along]

    def label(self, station_id: str, sensors: tuple[str, ...], end_ts: int) -> FaultLabel:
        sensor = STATION_WIDE if self.sensor < 0 else sensors[self.sensor]
        return FaultLabel(station_id, sensor, self.kind.value, self.start_ts, end_ts)


def draw_fault(
    rng: np.random.Generator,
    kinds: tuple[FaultKind, ...],
    cumulative: np.ndarray,
    *,
    station: int,
    tick: int,
    std: np.ndarray,
    tick_s: float,
    malfunction_mean: float,
    coupled: np.ndarray | None = None,
    phi: float = 0.0,
) -> Fault:
    """A fault starting at `tick`; always consumes the same number of draws from `rng`.

    The fixed number of draws keeps the fault stream identical however ticks are grouped into
    blocks. Per-tick noise comes from a generator of the fault's own, seeded from `rng`.
    `coupled` holds the sensors that follow the load (the only ones a relation kind can hit) and
    `phi` the signal's one-tick autocorrelation, which a decoupled sensor's own walk keeps.
    """
    u_kind, u_sensor, u_duration, u_size, u_sign = rng.random(5)
    noise_seed = int(rng.integers(2**62))
    kind = kinds[min(int(np.searchsorted(cumulative, u_kind, side="right")), len(kinds) - 1)]
    shape = FAULT_SHAPES[kind]
    seconds = shape.min_s + u_duration * (shape.max_s - shape.min_s)
    ticks = 1 if kind is FaultKind.SPIKE else max(1, round(seconds / tick_s))
    if kind is FaultKind.DROPOUT:
        sensor = -1
    elif kind in RELATION_KINDS:
        if coupled is None or not len(coupled):
            raise ValueError(f"a {kind.value} fault needs a sensor coupled to the load")
        sensor = int(coupled[min(int(u_sensor * len(coupled)), len(coupled) - 1)])
    else:
        sensor = min(int(u_sensor * len(std)), len(std) - 1)
    size = shape.min_size + u_size * (shape.max_size - shape.min_size)
    sign = 1.0 if u_sign < 0.5 else -1.0
    fault = Fault(kind, station, sensor, tick, tick + ticks - 1)
    sigma = float(std[sensor]) if sensor >= 0 else 0.0
    if kind in (FaultKind.SPIKE, FaultKind.LEVEL_SHIFT, FaultKind.DRIFT):
        fault.offset = sign * size * sigma
    elif kind is FaultKind.VARIANCE:
        # Independent extra noise of this spread makes the total spread size times the std.
        extra = sigma * math.sqrt(size * size - 1.0)
        fault.noise = np.random.default_rng(noise_seed).normal(0.0, extra, ticks)
    elif kind is FaultKind.MALFUNCTION:
        fault.noise = np.random.default_rng(noise_seed).exponential(malfunction_mean, ticks)
    elif kind is FaultKind.DECOUPLE:
        fault.noise = unit_walk(np.random.default_rng(noise_seed), ticks, phi)
    return fault


def unit_walk(rng: np.random.Generator, ticks: int, phi: float) -> np.ndarray:
    """`ticks` steps of a stationary AR(1) walk of spread 1 and one-tick autocorrelation `phi`."""
    steps = rng.standard_normal(ticks)
    steps[1:] *= math.sqrt(1.0 - phi * phi)
    for t in range(1, ticks):
        steps[t] += phi * steps[t - 1]
    return steps
