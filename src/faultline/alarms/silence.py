"""The station-silence condition, for a timer to call: no message has to arrive to raise it.

`silence` is pure: given when each station was last heard from, the time now and the stations
already silent (with their activation times), it returns the `silent` raise and clear transitions
and the new set. A silence activates at the moment it began (last reading + `silent_after_s`),
not when the timer happened to look, so two watchdogs (or a replay) give the same key. Times are
those of one clock: engines pass processing time (when the bus accepted a station's last
message) and their clock's now.
"""

from __future__ import annotations

from collections.abc import Mapping

from faultline.alarm_schema import (
    ENGINE,
    SILENT,
    STATION_WIDE,
    AlarmKey,
    AlarmTransition,
    EngineAction,
)
from faultline.config import AlarmSettings


def silence(
    last_seen: Mapping[str, int],
    now_ms: int,
    silent: Mapping[str, int],
    settings: AlarmSettings,
) -> tuple[list[AlarmTransition], dict[str, int]]:
    """Raise `silent` for stations quiet longer than their rule allows; clear those heard again.

    `silent` maps each silent station to its activation time; stations missing from `last_seen`
    keep whatever state they have. A silent station heard from after its silence began but
    quiet again now gets both: the clear of the old silence and the raise of the new one.
    """
    out: list[AlarmTransition] = []
    now_silent = dict(silent)
    for station_id, last in sorted(last_seen.items()):
        after_ms = round(settings.rule_for(station_id, STATION_WIDE).silent_after_s * 1000)
        key = AlarmKey(station_id, STATION_WIDE, SILENT)
        activation = now_silent.get(station_id)
        quiet = now_ms - last > after_ms
        if quiet and activation is not None and last >= activation:
            # Heard from after the silence began, and quiet again with no look in between (a
            # restart replaying from a checkpoint taken while silent, or a backlog): that
            # silence ended and a new one began. The keys are those a look in between made, so
            # a store that has them already keeps its own.
            out.append(_transition(key, "clear", last, activation, settings))
            activation = None
        if quiet and activation is None:
            began = last + after_ms
            out.append(_transition(key, "raise", began, began, settings))
            now_silent[station_id] = began
        elif not quiet and activation is not None and last >= activation:
            # Heard from after the silence began: the reading that ended it clears it.
            out.append(_transition(key, "clear", last, activation, settings))
            del now_silent[station_id]
    return out, now_silent


def _transition(
    key: AlarmKey, action: EngineAction, ts: int, activation: int, settings: AlarmSettings
) -> AlarmTransition:
    return AlarmTransition(
        key,
        action,
        ts,
        activation,
        actor=ENGINE,
        severity=settings.silent_severity,
    )
