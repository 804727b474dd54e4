"""Alarm quality and cost: one simulated day of stations through the default detectors and the
alarm layer, against the simulator's fault labels.

The detectors are the ones the engine runs, built by `faultline.detect.factory` from the same
Settings and seed 000's model trained and loaded through the MLflow registry as `faultline up`
does; readings go through them in engine-sized batches. The tracker (default `alarms` settings)
follows each batch and the silence watchdog looks once per simulated second, both through the
engines' own alarm state (`EngineAlarms`). No waiting: time
is the readings' event time.

Figures, over the faults that begin after a station's alarm warm-up:
  * alarmed: faults with an alarm on their station, raised in [start, end + grace] and blaming
    their sensor (any, for a station-wide fault; a `silent` alarm for a dropout);
  * time to alarm: readings from a fault's first reading to its first such alarm (median, p95);
  * false alarms per station-day: alarms whose span [raise, clear] overlaps no fault (+ grace)
    of their station; `false_warmup`: those raised in the first 30 minutes of the stream;
  * duplicates: alarms raised within a fault's [start, end + grace] beyond its first, less
    those another fault of the station explains (raised within it, blaming its sensor);
    `overlapping_beyond_first` also counts alarms raised before the fault and still active;
  * throughput: readings/s of the tracker and of the detector step, and their ratio;
  * alarm load: peak per 10 minutes, chattering and bad actors.

    PYTHONPATH=src .venv/bin/python bench/bench_alarms.py [--stations 25] [--hours 24] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faultline.alarm_schema import STATION_WIDE, AlarmTransition
from faultline.alarms import alarm_load
from faultline.config import Settings, load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine.alarming import EngineAlarms
from faultline.runtime import ensure_model, model_registry
from faultline.schema import STATION_ID, TS, FaultLabel
from faultline.simulate import simulate_frame

GRACE_MS = 10_000  # as `faultline eval simulate`: an alarm just after a fault still found it
WARMUP_WINDOW_MS = 30 * 60_000
INTERVAL_MS = 1000


@dataclass(frozen=True)
class Scored:
    frame: pd.DataFrame
    labels: list[FaultLabel]
    detect_s: float


def score_day(settings: Settings, stations: int, hours: float, seed: int, data: Path) -> Scored:
    """The simulated readings scored by the engine's detector set, batch by batch."""
    registry = model_registry(
        settings.model_copy(update={"data_dir": data, "mlflow_uri": f"sqlite:///{data / 'm.db'}"})
    )
    ensure_model(settings, registry)
    pipeline = DetectorPipeline(build_detectors(settings, registry.current()))
    frame, labels = simulate_frame(
        settings.sensors,
        round(hours * 3600),
        stations=stations,
        seed=seed,
        faults_per_station_hour=settings.simulate.faults_per_station_hour,
        interval_ms=INTERVAL_MS,
    )
    size = settings.engine.batch_max_records
    started = time.perf_counter()
    parts = [pipeline.run(frame.iloc[lo : lo + size]) for lo in range(0, len(frame), size)]
    return Scored(pd.concat(parts, ignore_index=True), labels, time.perf_counter() - started)


def track(
    settings: Settings, frame: pd.DataFrame
) -> tuple[list[AlarmTransition], list[AlarmTransition], float]:
    """The anomaly transitions (and the seconds they took) and the watchdog's silent ones."""
    # The engines' own alarm state (faultline.engine.alarming), as both build it.
    alarms = EngineAlarms(settings.alarms, settings.sensor_names, settings.engine.max_stations)
    size = settings.engine.batch_max_records
    anomalies: list[AlarmTransition] = []
    started = time.perf_counter()
    for lo in range(0, len(frame), size):
        anomalies.extend(alarms.step(frame.iloc[lo : lo + size]))
    tracked_s = time.perf_counter() - started

    codes, names = pd.factorize(frame[STATION_ID])
    ts = frame[TS].to_numpy(np.int64)
    last = np.full(len(names), -1, np.int64)
    silences: list[AlarmTransition] = []
    ticks = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    for lo, hi in zip(ticks, np.r_[ticks[1:], len(ts)], strict=True):
        last[codes[lo:hi]] = ts[lo:hi]
        seen = {str(names[k]): int(v) for k, v in enumerate(last) if v >= 0}
        silences.extend(alarms.watch(seen, int(ts[lo])))
    return anomalies, silences, tracked_s


def spans(transitions: Sequence[AlarmTransition], end_ms: int) -> pd.DataFrame:
    """One row per activation: station, kind, raise, clear (end_ms if still active), sensors."""
    cleared = {(t.alarm, t.activation_ts): t.ts for t in transitions if t.action == "clear"}
    rows = [
        (
            t.alarm.station_id,
            t.alarm.kind,
            t.ts,
            cleared.get((t.alarm, t.activation_ts), end_ms),
            {name for name, _ in t.sensors},
        )
        for t in transitions
        if t.action == "raise"
    ]
    return pd.DataFrame(rows, columns=["station", "kind", "raised", "cleared", "sensors"])


def explained_by_other(
    fault: FaultLabel, alarms: pd.DataFrame, station_faults: Sequence[FaultLabel]
) -> pd.Series:
    """Which of a station's alarms another fault of the station began within (raised in its
    [start, end + grace], blaming its sensor, or any for a station-wide fault)."""
    out = pd.Series(False, index=alarms.index)
    for other in station_faults:
        if other == fault or other.start_ts <= fault.start_ts:
            continue
        within = (alarms.raised >= other.start_ts) & (alarms.raised <= other.end_ts + GRACE_MS)
        if other.sensor != STATION_WIDE:
            within &= alarms.sensors.map(lambda s, sensor=other.sensor: sensor in s)
        out |= within
    return out


def evaluate(
    settings: Settings, scored: Scored, transitions: Sequence[AlarmTransition]
) -> dict[str, object]:
    frame = scored.frame
    first = frame.groupby(STATION_ID)[TS].min()
    start_ms, end_ms = int(frame[TS].min()), int(frame[TS].max()) + INTERVAL_MS
    warm_ms = settings.alarms.warmup_readings * INTERVAL_MS
    alarms = spans(transitions, end_ms)
    faults = [f for f in scored.labels if f.start_ts >= int(first[f.station_id]) + warm_ms]
    by_station = {s: g for s, g in alarms.groupby("station")}
    empty = alarms.iloc[:0]

    delays: dict[str, list[int]] = {}
    missed: Counter[str] = Counter()
    duplicates = overlaps = 0
    true_alarm = np.zeros(len(alarms), bool)
    faults_of: dict[str, list[FaultLabel]] = {}
    for f in scored.labels:
        faults_of.setdefault(f.station_id, []).append(f)
    for f in scored.labels:
        mine = by_station.get(f.station_id, empty)
        overlapping = (mine.raised <= f.end_ts + GRACE_MS) & (mine.cleared >= f.start_ts)
        true_alarm[mine.index[overlapping.to_numpy()]] = True
        if f not in faults:
            continue
        overlaps += max(0, int(overlapping.sum()) - 1)
        finds = (mine.raised >= f.start_ts) & (mine.raised <= f.end_ts + GRACE_MS)
        # An alarm that another fault of the station explains (raised within it, blaming its
        # sensor) is that fault's, not a second one of this.
        others = explained_by_other(f, mine, faults_of.get(f.station_id, []))
        duplicates += max(0, int((finds & ~others).sum()) - 1)
        if f.sensor != STATION_WIDE:
            finds &= mine.sensors.map(lambda s, sensor=f.sensor: sensor in s)
        if finds.any():
            first_raise = int(mine.raised[finds].min())
            delays.setdefault(f.kind, []).append((first_raise - f.start_ts) // INTERVAL_MS)
        else:
            missed[f.kind] += 1
    false = alarms[~true_alarm]
    station_days = frame[STATION_ID].nunique() * (end_ms - start_ms) / 86_400_000
    false_warmup = int(
        (false.raised.to_numpy() < false.station.map(first).to_numpy() + WARMUP_WINDOW_MS).sum()
    )
    alarmed = sum(len(v) for v in delays.values())
    load = alarm_load(list(transitions), start_ms, end_ms)

    def median(kind: str) -> float | None:
        got = delays.get(kind)
        return float(np.median(got)) if got else None

    return {
        "faults": len(faults),
        "faults_in_warmup": len(scored.labels) - len(faults),
        "alarmed_pct": round(100 * alarmed / len(faults), 2) if faults else None,
        "missed": dict(missed),
        "median_delay_spike": median("spike"),
        "median_delay_level_shift": median("level_shift"),
        "median_delay": {k: float(np.median(v)) for k, v in sorted(delays.items())},
        "alarms": len(alarms),
        "false_alarms": len(false),
        "false_per_station_day": round(len(false) / station_days, 3),
        "false_warmup": false_warmup,
        "duplicates": duplicates,
        "overlapping_beyond_first": overlaps,
        "peak_per_10_minutes": load.peak_10_minutes,
        "chattering": len(load.chattering),
        "bad_actors": [[k.id, n] for k, n in load.bad_actors[:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=25)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        scored = score_day(settings, args.stations, args.hours, args.seed, Path(tmp))
    anomalies, silences, tracked_s = track(settings, scored.frame)
    figures = evaluate(settings, scored, anomalies + silences)
    n = len(scored.frame)
    detect_rate, track_rate = n / scored.detect_s, n / tracked_s
    figures.update(
        readings=n,
        detect_readings_per_s=round(detect_rate),
        tracker_readings_per_s=round(track_rate),
        tracker_vs_detect=round(track_rate / detect_rate, 2),
    )
    for name, value in figures.items():
        print(f"{name:28s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
