"""Event-wise scoring of alarms against labelled faults, in event time.

An *alarm* is the onset of a run of flagged readings of one station (the hysteresis layer
already merges a fault's flickering evidence into one run, so one run is one alarm), with the
sensors its onset reading blames. An *event* is one labelled fault: a station, a sensor (or the
whole station), and the event times [start, end] of its first and last affected reading.

Matching: an alarm *detects* an event when it is on the same station, its onset lies in
[start, end + grace] and it blames the event's sensor (any sensor for a station-wide event).
The grace lets a detector that only notices a fault on the reading after it (the end of a
dropout, the fall back from a spike) still count. An event is detected by its earliest such
alarm; its *delay* is the number of reporting intervals from the start to that onset (0 = on
the first affected reading). Every alarm that detects some event is *true*, later ones for an
already detected event included (they add no recall, and they are not false alarms: something
was wrong); every other alarm is *false*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALL_SENSORS = -1  # the sensor index of an event that hits the whole station


@dataclass(frozen=True)
class Alarms:
    """Alarm onsets: station code, onset time (epoch ms) and blamed-sensor bit mask."""

    station: np.ndarray  # int64
    ts: np.ndarray  # int64
    mask: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Events:
    """Labelled faults: station code, sensor index (ALL_SENSORS = station-wide), start, end."""

    station: np.ndarray  # int64
    sensor: np.ndarray  # int64
    start: np.ndarray  # int64, epoch ms of the first affected reading
    end: np.ndarray  # int64, epoch ms of the last affected reading

    def __len__(self) -> int:
        return len(self.start)

    def __post_init__(self) -> None:
        if (self.end < self.start).any():
            raise ValueError("an event cannot end before it starts")

    def subset(self, keep: np.ndarray) -> Events:
        return Events(self.station[keep], self.sensor[keep], self.start[keep], self.end[keep])


@dataclass(frozen=True)
class Matching:
    """The event each alarm detects (-1: a false alarm) and each event's first detection."""

    alarm_event: np.ndarray  # int64 per alarm: an index into the events, or -1
    detected_at: np.ndarray  # int64 per event: onset of the earliest detecting alarm, or -1


def alarm_onsets(
    station: np.ndarray, ts: np.ndarray, flagged: np.ndarray, mask: np.ndarray
) -> Alarms:
    """The onsets of flagged runs per station, from readings in any station interleaving.

    `station` holds integer codes; each station's readings must appear in time order.
    """
    order = np.argsort(station, kind="stable")
    s, f = station[order], flagged[order]
    same = np.r_[False, s[1:] == s[:-1]]
    previous = np.r_[False, f[:-1]] & same
    onset = order[f & ~previous]
    onset.sort()
    return Alarms(
        station[onset].astype(np.int64), ts[onset].astype(np.int64), mask[onset].astype(np.int64)
    )


def match(alarms: Alarms, events: Events, grace_ms: int) -> Matching:
    """Match alarms to events (see the module docstring); events of a station must not overlap."""
    if grace_ms < 0:
        raise ValueError(f"grace must be >= 0, got {grace_ms}")
    chosen = np.full(len(alarms), -1, np.int64)
    if not len(alarms) or not len(events):
        return Matching(chosen, np.full(len(events), -1, np.int64))
    by_start = np.lexsort((events.start, events.station))
    e_station, e_start = events.station[by_start], events.start[by_start]
    # The latest event of the alarm's station that started at or before it, and the one before:
    # with the grace, an alarm just after one event's end may follow the next event's start.
    latest = _searchsorted_pairs(e_station, e_start, alarms.station, alarms.ts) - 1
    for back in (1, 0):  # the later candidate is written last, so it wins
        k = latest - back
        ok = k >= 0
        kk = np.where(ok, k, 0)
        e = by_start[kk]
        hit = (
            ok
            & (events.station[e] == alarms.station)
            & (alarms.ts >= events.start[e])
            & (alarms.ts <= events.end[e] + grace_ms)
            & (
                (events.sensor[e] == ALL_SENSORS)
                | ((alarms.mask >> np.maximum(events.sensor[e], 0)) & 1 == 1)
            )
        )
        chosen = np.where(hit, e, chosen)
    true = chosen >= 0
    never = np.iinfo(np.int64).max
    first = np.full(len(events), never)
    np.minimum.at(first, chosen[true], alarms.ts[true])
    return Matching(chosen, np.where(first < never, first, -1))


def _searchsorted_pairs(
    major: np.ndarray, minor: np.ndarray, q_major: np.ndarray, q_minor: np.ndarray
) -> np.ndarray:
    """searchsorted(side='right') of (q_major, q_minor) pairs in pairs sorted by (major, minor)."""
    # Ranks of minor values among all values make one exact integer key out of the pair.
    values = np.unique(np.r_[minor, q_minor])
    width = len(values)
    key = major * width + np.searchsorted(values, minor)
    q_key = q_major * width + np.searchsorted(values, q_minor)
    return np.searchsorted(key, q_key, side="right")


@dataclass(frozen=True)
class EventScore:
    """Event-wise precision, recall, F1 and detection delay (in reporting intervals)."""

    events: int
    detected: int
    alarms: int
    true_alarms: int
    delays: np.ndarray  # one per detected event

    @property
    def precision(self) -> float | None:
        return self.true_alarms / self.alarms if self.alarms else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.events if self.events else None

    @property
    def f1(self) -> float | None:
        """Harmonic mean; no alarm at all (precision undefined) with events to find is 0."""
        if self.recall is None:
            return None
        p, r = self.precision or 0.0, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def delay(self, q: float) -> float | None:
        return float(np.quantile(self.delays, q)) if len(self.delays) else None

    def as_json(self) -> dict[str, float | int | None]:
        return {
            "events": self.events,
            "detected": self.detected,
            "alarms": self.alarms,
            "true_alarms": self.true_alarms,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "delay_median": self.delay(0.5),
            "delay_p95": self.delay(0.95),
        }


def score_events(
    alarms: Alarms,
    events: Events,
    grace_ms: int,
    interval_ms: int,
    counted: np.ndarray | None = None,
) -> EventScore:
    """Match and summarise; delays are whole reporting intervals from an event's start.

    Events not `counted` (e.g. begun before the detector could give a verdict) are left out,
    and so are the alarms that detect them: such an alarm is neither a hit nor a false alarm.
    """
    if interval_ms < 1:
        raise ValueError(f"interval must be at least 1 ms, got {interval_ms}")
    keep = np.ones(len(events), bool) if counted is None else np.asarray(counted, bool)
    m = match(alarms, events, grace_ms)
    hit = (m.detected_at >= 0) & keep
    # Index -1 (a false alarm) reads the appended True: never ignored.
    ignored = ~np.r_[keep, True][m.alarm_event]
    return EventScore(
        events=int(keep.sum()),
        detected=int(hit.sum()),
        alarms=int(len(alarms) - ignored.sum()),
        true_alarms=int(((m.alarm_event >= 0) & ~ignored).sum()),
        delays=(m.detected_at[hit] - events.start[hit]) // interval_ms,
    )


def silence_alarms(station: np.ndarray, ts: np.ndarray, silent_ms: int) -> Alarms:
    """The station-health layer's view: a station is declared silent `silent_ms` after its last
    reading when no reading follows in that time (the API's rule), one alarm per silence.

    Silences are found between readings; one still running when the readings end is not seen.
    """
    order = np.lexsort((ts, station))
    s, t = station[order], ts[order]
    same = s[1:] == s[:-1]
    gap = np.diff(t)
    silent = same & (gap > silent_ms)
    at = t[:-1][silent] + silent_ms + 1  # `now - last > silent_ms` first holds here
    return Alarms(
        s[:-1][silent].astype(np.int64), at.astype(np.int64), np.zeros(int(silent.sum()), np.int64)
    )
