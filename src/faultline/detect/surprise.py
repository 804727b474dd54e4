"""Calibrated surprise: several streaming views of each sensor, each judged against its own past.

Per (station, sensor), six views are kept up to date in O(1) per reading, on the reading less
its sensor's usual offset at that time of day (below):

* *point*: |x - location| / scale, the reading against a fast exponentially weighted baseline
  (spikes);
* *mean*: |mean of the last `short` readings - slow baseline| / its scale (level shifts, and
  drifts, which a fast baseline would follow);
* *jump*: |x - previous reading| / scale of such steps (sudden changes);
* *volatility*: fast over slow exponentially weighted variance of the deviations before the
  reading (noise bursts, a flat line coming alive);
* *stuck*: log2(1 + r) for a run of r readings equal to the one before (a frozen sensor; judged
  on the values as sent);
* *range*: how far the reading lies beyond the lowest and highest of the recent readings, in
  units of that range (a record; the edges drift back towards the baseline by 1e-4 a reading).

*Daily pattern.* Each sensor keeps a profile of 48 half-hour slots of the UTC day (each slot the
mean of its readings, averaged over days) and the share of its variance the profile explains.
Once a slot has been seen on two days, the views see the reading less that share of the slot's
offset from the sensor's level: a daily rise is then ordinary, and a reading at its usual night
level in the morning is not. A signal without a daily pattern explains nothing and is left as is.

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
surprise is its largest feature surprise less log10(6), and a reading's is its sensors' largest
less log10(sensors judged): the Bonferroni allowance for having looked several times. Surprise
reads as a probability: 3 = one reading in a thousand. Heavy-tailed noise is the weak spot: the
exponential tail underestimates how often a Student-t(4) reading lands far out.

A station that reaches surprise 3 more often than on one reading in a thousand (tracked over a
few thousand readings) has heavier tails than its views' estimates assume: its surprise is lowered
by twice log10 of that excess.

The score of a reading is its surprise when it is a *peak*, at least half the threshold and ten
times as surprising as every reading of the station's current *episode*, and 0 otherwise; an
episode ends once the station has been calm (surprise below half the threshold) for `calm`
readings in a row. A long fault shows as one scored onset (and any stronger escalation), not
hundreds of scored readings. `is_anomaly` follows the surprise through a hysteresis alarm (on at
`threshold`, off below half of it). NaN (no verdict) until a sensor has learned `warmup` values;
then, until every sensor judged has learned `calibrating` values, a reading is scored but
`learning`: its tail estimates are too young to trust, so it starts no alarm (a station's first
minutes raised most of the simulator's false alarms before, docs/decisions/0020).
The per-reading work is the numba kernel in `faultline.detect.surprise_kernel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import numpy as np
import pandas as pd

from faultline.detect import surprise_kernel as kernel
from faultline.detect.base import Detector, Scores
from faultline.detect.slots import StationSlots, grow, sensor_values
from faultline.schema import RECEIVED_AT, SEQ, STATION_ID, TS, TS_ASSIGNED

FEATURES = kernel.FEATURES
QUANTILES = kernel.QUANTILES
_SENSOR_FIELDS = {*kernel.SCALARS, "ring", "quantiles", "season"}
_DUMP_FORMAT = 1  # the layout of `dump`: raise it whenever the state arrays change shape


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
        adapt: float = 1 / 20,
        calm: int = 80,
        calibrating: int = 0,
    ) -> None:
        super().__init__(sensors)
        if warmup < 2 or short < 1 or calm < 1 or calibrating < 0:
            raise ValueError("need warmup >= 2, short >= 1, calm >= 1 and calibrating >= 0")
        if not all(0 < v < 1 for v in (alpha, slow, fast, adapt)) or not threshold > 0:
            raise ValueError(
                "alpha, slow, fast and adapt must lie in (0, 1) and threshold be positive"
            )
        if len(self.sensors) > 62:
            raise ValueError("at most 62 sensors: the responsible ones are bits of an int64")
        self.threshold, self.warmup, self.alpha, self.slow = threshold, warmup, alpha, slow
        self.short, self.fast, self.adapt, self.calm = short, fast, adapt, calm
        self.calibrating = calibrating
        self._params = np.array(
            [threshold, warmup, alpha, slow, short, fast, adapt, calm, calibrating], np.float64
        )
        self._slots = StationSlots()
        m = len(self.sensors)
        self._scalars = np.zeros((0, m, len(kernel.SCALARS)))
        self._ring = np.zeros((0, m, short))
        self._q = np.zeros((0, m, len(FEATURES), len(QUANTILES)))
        self._season = np.zeros((0, m, 2, kernel.SEASON_SLOTS))
        self._station = np.zeros((0, len(kernel.STATION_FIELDS)))

    def score(self, frame: pd.DataFrame) -> Scores:
        return self._run(self._slots.lookup(frame[STATION_ID].to_numpy()), frame, learn=False)

    def learn(self, frame: pd.DataFrame) -> None:
        self.process(frame)

    def process(self, frame: pd.DataFrame) -> Scores:
        slots = self._slots.assign(frame[STATION_ID].to_numpy())
        self._ensure(len(self._slots))
        return self._run(slots, frame, learn=True)

    def _run(self, slots: np.ndarray, frame: pd.DataFrame, *, learn: bool) -> Scores:
        empty = Scores.empty(len(frame))
        learning = np.zeros(len(frame), bool)
        out = Scores(empty.score, empty.is_anomaly, empty.sensor_mask, learning)
        if len(frame):
            kernel.process(
                slots,
                frame[TS].to_numpy(np.int64),
                sensor_values(frame, self.sensors),
                learn,
                self._scalars,
                self._ring,
                self._q,
                self._season,
                self._station,
                self._params,
                out.score,
                out.is_anomaly,
                out.sensor_mask,
                learning,
            )
        return out

    def _ensure(self, stations: int) -> None:
        self._scalars = grow(self._scalars, stations, 0.0)
        self._ring = grow(self._ring, stations, 0.0)
        self._q = grow(self._q, stations, 0.0)
        self._season = grow(self._season, stations, 0.0)
        self._station = grow(self._station, stations, 0.0)

    def _arrays(self) -> dict[str, np.ndarray]:
        """The state arrays by name, one row per station slot."""
        return {
            "scalars": self._scalars,
            "ring": self._ring,
            "quantiles": self._q,
            "season": self._season,
            "station": self._station,
        }

    def forget(self, stations: Sequence[str]) -> None:
        rows = self._slots.release(stations)
        for array in self._arrays().values():
            array[rows] = 0.0

    def dump(self, stations: Sequence[str] | None = None) -> bytes:
        """The chosen stations' rows of each state array as raw float64 bytes: no per-value
        work, so a checkpoint of thousands of stations costs about a copy of their state."""
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
            arrays = {}
            for name, array in self._arrays().items():
                shape = (len(stations), *array.shape[1:])
                arrays[name] = np.frombuffer(dump[name], np.float64).reshape(shape)
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # Refused whole, before any station changes: an older layout, other sensors, a
            # different ring length, or bytes that are no dump at all.
            raise ValueError(f"not a surprise dump this detector can load: {exc}") from exc
        rows = self._slots.assign(np.array(stations, dtype=object))
        self._ensure(len(self._slots))
        for name, array in self._arrays().items():
            array[rows] = arrays[name]

    def snapshot(self, stations: Sequence[str] | None = None) -> dict[str, Any]:
        chosen = self._slots.known(stations)
        state, alarm = {}, {}
        for station in chosen:
            slot = self._slots.get(station)
            fields = dict(zip(kernel.STATION_FIELDS, self._station[slot].tolist(), strict=True))
            state[station] = {
                "sensors": {
                    name: {
                        **dict(zip(kernel.SCALARS, self._scalars[slot, j].tolist(), strict=True)),
                        "ring": self._ring[slot, j].tolist(),
                        "quantiles": self._q[slot, j].tolist(),
                        "season": self._season[slot, j].tolist(),
                    }
                    for j, name in enumerate(self.sensors)
                },
                "episode": {"peak": fields["episode_peak"], "calm": int(fields["calm"])},
                "tail_rate": fields["tail_rate"],
            }
            alarm[station] = {"age": int(fields["alarm_age"]), "quiet": int(fields["alarm_quiet"])}
        return {"stations": state, "alarm": alarm}

    def restore(self, snapshot: dict[str, Any]) -> None:
        stations: dict[str, Any] = snapshot["stations"]
        for station, state in stations.items():
            unknown = set(state["sensors"]) - set(self.sensors)
            if unknown:
                raise ValueError(f"snapshot of {station!r} has unknown sensors {sorted(unknown)}")
            # An older detector's state is refused whole rather than half-restored.
            lacking = {"episode", "tail_rate"} - set(state)
            if lacking:
                raise ValueError(f"snapshot of {station!r} lacks {sorted(lacking)}")
            for name, sensor in state["sensors"].items():
                missing = _SENSOR_FIELDS - set(sensor)
                if missing:
                    raise ValueError(f"snapshot of {station!r}/{name!r} lacks {sorted(missing)}")
        slots = self._slots.assign(np.array(list(stations), dtype=object))
        self._ensure(len(self._slots))
        alarms: dict[str, Any] = snapshot["alarm"]
        for slot, (station, state) in zip(slots, stations.items(), strict=True):
            for j, name in enumerate(self.sensors):
                sensor = state["sensors"].get(name)
                self._scalars[slot, j] = [sensor[f] for f in kernel.SCALARS] if sensor else 0.0
                self._ring[slot, j] = sensor["ring"] if sensor else 0.0
                self._q[slot, j] = sensor["quantiles"] if sensor else 0.0
                self._season[slot, j] = sensor["season"] if sensor else 0.0
            alarm = alarms.get(station, {"age": 0, "quiet": 0})
            episode = state["episode"]
            self._station[slot] = [
                episode["peak"],
                episode["calm"],
                alarm["age"],
                alarm["quiet"],
                state["tail_rate"],
            ]


def compile_ahead() -> None:
    """Compile the detector's kernel into numba's cache through the path the engine takes.

    An image build runs this (`python -m faultline.detect.surprise`) with NUMBA_CACHE_DIR set,
    so containers whose user cannot write beside the installed source load the machine code
    instead of compiling it in every process, Spark's Python workers included.
    """
    one = np.zeros(1, np.int64)
    frame = pd.DataFrame(
        {STATION_ID: ["warm-up"], TS: one, SEQ: one, TS_ASSIGNED: [False], RECEIVED_AT: one}
    )
    frame["x"] = 0.0
    detector = SurpriseDetector(["x"])
    detector.process(frame)
    detector.score(frame)


if __name__ == "__main__":
    compile_ahead()
