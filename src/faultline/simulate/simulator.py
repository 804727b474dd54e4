"""N simulated stations, vectorised over ticks, stations and sensors.

Each sensor of each station follows a discretised Ornstein-Uhlenbeck process: it reverts to the
sensor's configured mean with correlation time `correlation_s`, and its stationary spread is exactly
the configured std, so a fault-free stream has the configured mean and std from the first tick
(the state starts from the stationary distribution; no burn-in).

A station's sensors can move together as physics couples them: each station has a load, an
Ornstein-Uhlenbeck walk of spread 1 with the same correlation time, and a sensor with
`load_coupling` a is mean + a·std·load + √(1-a²)·(its own walk), so its mean, spread and
correlation time are unchanged while two coupled sensors correlate by the product of their
couplings. The load comes from a random stream of its own, so uncoupled sensors read exactly as
they did before coupling existed.

Faults are laid over that signal (see `faultline.simulate.faults`). The simulator does not own time:
the caller gives each tick its event time, so the same simulator serves a paced live run, a run as
fast as possible and offline frames. Determinism: the signal, the fault starts and the fault
parameters come from three independent random streams spawned from the seed, each consumed the
same way per tick, so the same seed and parameters give identical readings and labels however
ticks are grouped into blocks, and the fault-free signal is the same with or without faults.

Every value is clipped into the sensor's physical range [min, max], so injected faults can push a
sensor to its limits but never produce readings the decoder would dead-letter, and rounded to
`DECIMALS` places, a sensor's resolution, which also keeps the JSON short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from faultline.bus import Record
from faultline.codec import encode_reading
from faultline.config import SensorSpec, Settings
from faultline.schema import (
    READING_COLUMNS,
    RECEIVED_AT,
    SEQ,
    STATION_ID,
    TS,
    TS_ASSIGNED,
    FaultLabel,
)
from faultline.simulate.faults import MALFUNCTION_NOISE_MEAN, Fault, draw_fault, weight_table

DECIMALS = 3


def station_ids(stations: int, prefix: str = "station_") -> tuple[str, ...]:
    """`station_001`, `station_002`, … (another prefix keeps simulator replicas apart)."""
    return tuple(f"{prefix}{i:03d}" for i in range(1, stations + 1))


@dataclass(frozen=True)
class Block:
    """The readings of one or more ticks, tick by tick and within a tick by station.

    `labels` are the faults whose last affected reading lies in this block, in the order they
    ended (ties by station).
    """

    sensors: tuple[str, ...]
    station_ids: tuple[str, ...]  # every station of the simulator; `station` indexes it
    station: np.ndarray  # int64, one per reading
    ts: np.ndarray  # int64 epoch ms, event time
    seq: np.ndarray  # int64, per station, +1 per reading
    values: np.ndarray  # float64, (readings, sensors)
    labels: list[FaultLabel]

    def __len__(self) -> int:
        return len(self.ts)

    def frame(self) -> pd.DataFrame:
        """The readings in `faultline.schema`'s layout, as if the bus accepted them at `ts`."""
        ids = np.asarray(self.station_ids, dtype=object)[self.station]
        frame = pd.DataFrame(
            {
                STATION_ID: ids,
                TS: self.ts,
                SEQ: self.seq,
                TS_ASSIGNED: np.zeros(len(self.ts), bool),
                RECEIVED_AT: self.ts,
            },
            columns=list(READING_COLUMNS),
        )
        for j, name in enumerate(self.sensors):
            frame[name] = self.values[:, j]
        return frame

    def records(self) -> list[Record]:
        """The readings in Faultline's wire form, keyed by station id."""
        ids = self.station_ids
        keys = [name.encode() for name in ids]
        sensors = self.sensors
        return [
            Record(encode_reading(ids[s], t, q, dict(zip(sensors, row, strict=True))), keys[s])
            for s, t, q, row in zip(
                self.station.tolist(),
                self.ts.tolist(),
                self.seq.tolist(),
                self.values.tolist(),
                strict=True,
            )
        ]


class Simulator:
    """Stations whose sensors wander around their configured means, with injected faults."""

    def __init__(
        self,
        sensors: Mapping[str, SensorSpec],
        *,
        stations: int = 25,
        seed: int | None = None,
        faults_per_station_hour: float = 0.0,
        fault_weights: Mapping[str, float] | None = None,
        tick_s: float = 1.0,
        correlation_s: float = 30.0,
        malfunction_noise_mean: float = MALFUNCTION_NOISE_MEAN,
        station_prefix: str = "station_",
    ) -> None:
        if not sensors:
            raise ValueError("the simulator needs at least one sensor")
        if stations < 1:
            raise ValueError(f"stations must be at least 1, got {stations}")
        for name, value in (
            ("tick_s", tick_s),
            ("correlation_s", correlation_s),
            ("malfunction_noise_mean", malfunction_noise_mean),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(faults_per_station_hour) and faults_per_station_hour >= 0):
            raise ValueError(
                f"faults_per_station_hour must be a number >= 0, got {faults_per_station_hour}"
            )
        self.sensors = tuple(sensors)
        self.station_ids = station_ids(stations, station_prefix)
        self.tick_s = tick_s
        specs = list(sensors.values())
        coupling = np.array([s.load_coupling for s in specs])
        self._coupled = np.flatnonzero(coupling != 0.0)
        self._kinds, self._cumulative = weight_table(fault_weights, len(self._coupled) > 0)
        self._mean = np.array([s.mean for s in specs])
        self._std = np.array([s.std for s in specs])
        self._load_share = coupling * self._std
        self._own_share = np.sqrt(1.0 - coupling**2)
        self._low = np.array([s.min for s in specs])
        self._high = np.array([s.max for s in specs])
        self._phi = math.exp(-tick_s / correlation_s)
        self._innovation = self._std * math.sqrt(1.0 - self._phi**2)
        self._malfunction_mean = malfunction_noise_mean
        # Poisson starts: the chance that a free station begins a fault in one tick.
        self._start_p = -math.expm1(-faults_per_station_hour * tick_s / 3600.0)

        # A child of a SeedSequence depends on its index alone: adding the load's stream left
        # the other three, and so every uncoupled reading, as they were.
        signal, starts, params, load = np.random.SeedSequence(seed).spawn(4)
        self._signal_rng = np.random.default_rng(signal)
        self._start_rng = np.random.default_rng(starts)
        self._param_rng = np.random.default_rng(params)
        self._load_rng = np.random.default_rng(load)
        self._deviation = self._std * self._signal_rng.standard_normal((stations, len(specs)))
        self._load = self._load_rng.standard_normal(stations)
        self._tick = 0  # ticks generated so far
        self._last_ts = 0
        self._next_seq = np.zeros(stations, np.int64)
        self._busy_until = np.full(stations, -1, np.int64)  # last tick of each station's fault
        self._faults: list[Fault] = []  # in progress, in order of start

    @classmethod
    def from_settings(cls, settings: Settings) -> Simulator:
        """The simulator `settings.simulate` describes; rate 0 ("as fast as possible") counts
        ticks as one second each for the fault rate and durations."""
        sim = settings.simulate
        return cls(
            settings.sensors,
            stations=sim.stations,
            seed=sim.seed,
            faults_per_station_hour=sim.faults_per_station_hour,
            tick_s=1.0 / sim.rate_hz if sim.rate_hz > 0 else 1.0,
            station_prefix=sim.station_prefix,
        )

    @property
    def stations(self) -> int:
        return len(self.station_ids)

    @property
    def ticks(self) -> int:
        """Ticks generated so far."""
        return self._tick

    def block(self, ts: Sequence[int] | np.ndarray) -> Block:
        """One tick per event time in `ts` (epoch ms): one reading per station not in dropout."""
        times = np.asarray(ts, dtype=np.int64).reshape(-1)
        n_ticks, n_stations, n_sensors = len(times), self.stations, len(self.sensors)
        first, last = self._tick, self._tick + n_ticks - 1
        values = self._signal(n_ticks)
        load = self._station_load(n_ticks)
        if len(self._coupled):
            values *= self._own_share
            values += load[:, :, None] * self._load_share
        values += self._mean
        present = np.ones((n_ticks, n_stations), bool)
        self._start_faults(first, n_ticks)

        ended: list[Fault] = []
        ongoing: list[Fault] = []
        for fault in self._faults:
            fault.apply(values, present, times, first, self._mean, load, self._load_share)
            (ended if fault.end <= last else ongoing).append(fault)
        self._faults = ongoing
        # In the order they end, so that labels come out the same however ticks are grouped.
        ended.sort(key=lambda fault: (fault.end, fault.station))
        ids = self.station_ids
        labels = [
            fault.label(ids[fault.station], self.sensors, int(times[fault.end - first]))
            for fault in ended
        ]

        np.clip(values, self._low, self._high, out=values)
        np.round(values, DECIMALS, out=values)
        seq = self._next_seq + np.cumsum(present, axis=0) - 1
        if n_ticks:
            self._next_seq = seq[-1] + 1
            self._last_ts = int(times[-1])
        self._tick += n_ticks

        keep = present.reshape(-1)
        return Block(
            sensors=self.sensors,
            station_ids=self.station_ids,
            station=np.tile(np.arange(n_stations, dtype=np.int64), n_ticks)[keep],
            ts=np.repeat(times, n_stations)[keep],
            seq=seq.reshape(-1)[keep],
            values=values.reshape(-1, n_sensors)[keep],
            labels=labels,
        )

    def finish(self) -> list[FaultLabel]:
        """End the faults in progress at the last tick generated, and return their labels.

        Call it when the stream stops, so that every injected fault has its label.
        """
        labels = [
            fault.label(self.station_ids[fault.station], self.sensors, self._last_ts)
            for fault in sorted(self._faults, key=lambda fault: fault.station)
        ]
        self._faults = []
        return labels

    def _signal(self, n_ticks: int) -> np.ndarray:
        """The sensors' own walks over the next `n_ticks` ticks, (ticks, stations, sensors),
        as deviations from their means."""
        steps = self._signal_rng.standard_normal((n_ticks, *self._deviation.shape))
        steps *= self._innovation
        deviation = self._deviation
        phi = self._phi
        for t in range(n_ticks):
            deviation = phi * deviation + steps[t]
            steps[t] = deviation
        self._deviation = deviation
        return steps

    def _station_load(self, n_ticks: int) -> np.ndarray:
        """The stations' loads over the next `n_ticks` ticks, (ticks, stations), spread 1.

        Drawn only when some sensor follows it, so an uncoupled run costs nothing more."""
        if not len(self._coupled):
            return np.zeros((n_ticks, self.stations))
        steps = self._load_rng.standard_normal((n_ticks, self.stations))
        steps *= math.sqrt(1.0 - self._phi**2)
        load = self._load
        for t in range(n_ticks):
            load = self._phi * load + steps[t]
            steps[t] = load
        self._load = load
        return steps

    def _start_faults(self, first: int, n_ticks: int) -> None:
        if self._start_p == 0.0:
            return
        draws = self._start_rng.random((n_ticks, self.stations))
        for t, station in np.argwhere(draws < self._start_p).tolist():
            tick = first + t
            if self._busy_until[station] >= tick:
                continue
            fault = draw_fault(
                self._param_rng,
                self._kinds,
                self._cumulative,
                station=station,
                tick=tick,
                std=self._std,
                coupled=self._coupled,
                phi=self._phi,
                tick_s=self.tick_s,
                malfunction_mean=self._malfunction_mean,
            )
            self._busy_until[station] = fault.end
            self._faults.append(fault)
