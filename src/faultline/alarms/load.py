"""Alarm-load figures (ISA-18.2 / EEMUA 191 style) over recorded transitions.

Only `raise` and `clear` matter here: each raise is one activation of its alarm. Pure functions
of a list of transitions, so the API, the metrics and the benchmark compute them the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from faultline.alarm_schema import AlarmKey, AlarmTransition
from faultline.clock import ms_to_datetime

TEN_MINUTES_MS = 600_000
CHATTER_ACTIVATIONS = 3
CHATTER_WINDOW_MS = 60_000
STANDING_MS = 24 * 3_600_000
BAD_ACTORS = 10


def _raises(transitions: Iterable[AlarmTransition]) -> list[AlarmTransition]:
    return sorted((t for t in transitions if t.action == "raise"), key=lambda t: (t.ts, t.alarm))


def per_10_minutes(transitions: Iterable[AlarmTransition], start_ms: int, end_ms: int) -> list[int]:
    """Activations in each 10-minute window of [start_ms, end_ms), the windows from start_ms."""
    if end_ms <= start_ms:
        return []
    counts = [0] * (-(-(end_ms - start_ms) // TEN_MINUTES_MS))
    for t in _raises(transitions):
        if start_ms <= t.ts < end_ms:
            counts[(t.ts - start_ms) // TEN_MINUTES_MS] += 1
    return counts


def per_station_day(transitions: Iterable[AlarmTransition]) -> dict[tuple[str, date], int]:
    """Activations per station and UTC day."""
    return dict(
        Counter((t.alarm.station_id, ms_to_datetime(t.ts).date()) for t in _raises(transitions))
    )


def bad_actors(
    transitions: Iterable[AlarmTransition], top: int = BAD_ACTORS
) -> list[tuple[AlarmKey, int]]:
    """The `top` alarms activated most often, most first (ties in key order)."""
    counts = Counter(t.alarm for t in _raises(transitions))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def chattering(
    transitions: Iterable[AlarmTransition],
    activations: int = CHATTER_ACTIVATIONS,
    within_ms: int = CHATTER_WINDOW_MS,
) -> list[AlarmKey]:
    """Alarms activated at least `activations` times within some `within_ms`, in key order."""
    times: dict[AlarmKey, list[int]] = {}
    for t in _raises(transitions):
        times.setdefault(t.alarm, []).append(t.ts)
    return sorted(
        key
        for key, ts in times.items()
        if any(
            ts[i + activations - 1] - ts[i] <= within_ms for i in range(len(ts) - activations + 1)
        )
    )


def standing(
    transitions: Iterable[AlarmTransition], now_ms: int, longer_than_ms: int = STANDING_MS
) -> list[tuple[AlarmKey, int]]:
    """Alarms active at `now_ms` since more than `longer_than_ms`, with their activation time."""
    since: dict[AlarmKey, int] = {}
    ordered = sorted(
        (t for t in transitions if t.action in ("raise", "clear")),
        key=lambda t: (t.ts, t.action == "raise"),
    )
    for t in ordered:
        if t.ts > now_ms:
            break
        if t.action == "raise":
            since[t.alarm] = t.activation_ts
        elif since.get(t.alarm) == t.activation_ts:
            del since[t.alarm]
    return sorted(
        ((key, ts) for key, ts in since.items() if now_ms - ts > longer_than_ms),
        key=lambda kv: (kv[1], kv[0]),
    )


@dataclass(frozen=True)
class AlarmLoad:
    """The figures of one period [start_ms, end_ms), standing alarms as of its end."""

    activations: int
    per_10_minutes: Sequence[int]
    per_station_day: dict[tuple[str, date], int]
    bad_actors: Sequence[tuple[AlarmKey, int]]
    chattering: Sequence[AlarmKey]
    standing: Sequence[tuple[AlarmKey, int]]

    @property
    def peak_10_minutes(self) -> int:
        return max(self.per_10_minutes, default=0)


def alarm_load(transitions: Sequence[AlarmTransition], start_ms: int, end_ms: int) -> AlarmLoad:
    within = [t for t in transitions if start_ms <= t.ts < end_ms]
    return AlarmLoad(
        activations=len(_raises(within)),
        per_10_minutes=per_10_minutes(within, start_ms, end_ms),
        per_station_day=per_station_day(within),
        bad_actors=bad_actors(within),
        chattering=chattering(within),
        standing=standing(transitions, end_ms),
    )
