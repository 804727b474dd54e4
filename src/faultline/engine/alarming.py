"""The alarm part of an engine's per-station state: the tracker's and the silence watchdog's.

`EngineAlarms` is what an engine carries beside its detector pipeline so that alarms come from
the same place as the verdicts (decision 0013): `step` turns a scored batch into anomaly
transitions with `AlarmTracker`, and `watch` asks the station-silence condition from a timer,
with the engine's clock and the bus acceptance time of each station's newest reading. Both are
checkpointed with the detector state (`dump`/`load`/`forget`, like `DetectorPipeline`'s), so a
restarted engine neither re-raises an alarm nor forgets one that is active.

The silent set outlives the stations' other state: an evicted station (silent for days) keeps
its `silent` alarm until it reports again, so the set is saved in every partition's checkpoint
and merged on load (an entry is dropped only by the clear). It is bounded, like the stations
held, by `max_silent`; beyond it the oldest silences are forgotten (their alarms stay active in
the store until an operator sees to them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import pandas as pd

from faultline.alarm_schema import AlarmTransition
from faultline.alarms import AlarmTracker, TrackerState, silence
from faultline.config import AlarmSettings

log = logging.getLogger(__name__)


class _Dump(msgspec.Struct, frozen=True):
    tracker: bytes  # TrackerState.snapshot of the dumped stations
    silent: dict[str, int]  # every silent station -> its silence's activation time


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Dump)


class EngineAlarms:
    """Alarm transitions from verdicts and from silence, with checkpointable state."""

    def __init__(
        self, settings: AlarmSettings, sensors: Sequence[str], max_silent: int = 10_000
    ) -> None:
        self.settings = settings
        self._tracker = AlarmTracker(settings, sensors)
        self._state = TrackerState()
        self._silent: dict[str, int] = {}
        self._max_silent = max_silent

    @property
    def silent(self) -> Mapping[str, int]:
        """The stations silent now, with the activation time of their silence."""
        return self._silent

    def step(self, verdicts: pd.DataFrame) -> list[AlarmTransition]:
        """The anomaly transitions a scored batch causes (the tracker's state moves on)."""
        transitions, self._state = self._tracker.step(verdicts, self._state)
        return transitions

    def watch(self, last_seen: Mapping[str, int], now_ms: int) -> list[AlarmTransition]:
        """The silence transitions at `now_ms`, given when each station was last heard from."""
        transitions, self._silent = silence(last_seen, now_ms, self._silent, self.settings)
        if len(self._silent) > self._max_silent:
            oldest = sorted(self._silent, key=lambda s: (self._silent[s], s))
            for station in oldest[: len(self._silent) - self._max_silent]:
                del self._silent[station]
            log.warning(
                "more than %d stations silent: forgot the oldest silences", self._max_silent
            )
        return transitions

    def dump(self, stations: Iterable[str]) -> bytes:
        """The tracker state of `stations` and the whole silent set."""
        return _ENCODER.encode(_Dump(self._state.snapshot(list(stations)), dict(self._silent)))

    def load(self, data: bytes) -> None:
        """Take over what `dump` gave; ValueError (changing nothing) when it cannot be read."""
        try:
            dump = _DECODER.decode(data)
            restored = TrackerState.restore(dump.tracker)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"not an engine alarm dump: {exc}") from exc
        self._state = self._state.merged(restored)
        for station, activation in dump.silent.items():
            if activation > self._silent.get(station, activation - 1):
                self._silent[station] = activation

    def forget(self, stations: Iterable[str]) -> None:
        """Drop the tracker state of `stations`; their silences stay (see the module docstring)."""
        gone = set(stations)
        if gone:
            self._state = TrackerState(
                {s: st for s, st in self._state.stations.items() if s not in gone}
            )
