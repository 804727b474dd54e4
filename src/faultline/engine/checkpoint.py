"""Checkpointed detector state: what the engine has learned, stored with the position it covers.

Every `checkpoint_interval_s` (or `checkpoint_max_messages` messages) the engine's next batch
carries one `Checkpoint` per partition it read since the last one: the pipeline's dump of the
stations that partition carries, their last-seen times, and the position after the last message
learned. The store commits it with the batch (faultline.store.checkpoints), and the engine
acknowledges the bus only up to checkpoints. After a crash the bus delivers again from the last
acknowledged position, which is at or before the last stored checkpoint; so when the engine sees
a partition for the first time, or at an offset it did not expect (a restart, a rewind, a
partition moved between engines), it loads that partition's checkpoint: the state as it was
right after the checkpoint's position, and messages below it are skipped, being learned and
stored already. Messages after it are learned again from that state, giving the verdicts they
had, which the idempotent store ignores. No reading is learned twice and nothing re-warms.

A log that was recreated (Kafka topic deleted and created again; a new memory bus) restarts its
offsets, so its checkpoints must not be mistaken for the old log's. The checkpoint state names
the log (`Bus.log_id`); one of another log is ignored, and its position becomes the new log's
`base`: a checkpoint's offset is base + the bus offset, so the new log's checkpoints are never
lower than the old one's, which the store would keep (it never moves a checkpoint back).

The alarm state (faultline.engine.alarming: the alarm tracker's per-station state and the
silent stations) travels in the same checkpoint, so a restart neither raises an active alarm
again nor loses one.

Stations are bounded here too: a station is *held* while its state is. Readings of a new station
beyond `max_stations` are refused (the engine dead-letters them), and stations silent for
`evict_silent_after_s` of log time (the bus acceptance time of the newest message learned) are
forgotten at the next checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from faultline.bus import Message
from faultline.clock import Clock
from faultline.config import EngineSettings
from faultline.detect import DetectorPipeline
from faultline.engine.alarming import EngineAlarms
from faultline.metrics import Metrics
from faultline.schema import Checkpoint
from faultline.store import Checkpoints, Store

log = logging.getLogger(__name__)


class _State(msgspec.Struct, frozen=True):
    """What a checkpoint's `state` holds."""

    log: str  # Bus.log_id of the log the position is in
    base: int  # the checkpoint's offset less the bus offset (see the module docstring)
    seen: dict[str, int]  # station -> bus acceptance time (ms) of its newest message learned
    pipeline: bytes  # DetectorPipeline.dump of those stations
    alarms: bytes = b""  # EngineAlarms.dump of those stations (none before alarms existed)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_State)


@dataclass
class _Partition:
    base: int
    skip_below: int  # bus offsets below this are learned and stored already
    next: int  # the bus offset expected next
    dirty: bool = False  # learned or forgot something since its last checkpoint


class Checkpointer:
    """Tracks what one engine has learned per partition and turns it into checkpoints."""

    def __init__(
        self,
        *,
        store: Store,
        group: str,
        topic: str,
        log_id: str,
        settings: EngineSettings,
        clock: Clock,
        metrics: Metrics,
        alarms: EngineAlarms,
    ) -> None:
        self._store = store
        self._alarms = alarms
        self._group, self._topic, self._log_id = group, topic, log_id
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._partitions: dict[int, _Partition] = {}
        self._station_partition: dict[str, int] = {}  # the stations held
        self._seen: dict[str, int] = {}
        self._unacked: list[Message] = []  # learned and stored, not yet covered by a checkpoint
        self._since = 0  # messages learned since the last checkpoint
        self._last_ms: int | None = None  # when the last checkpoint was taken; None: never
        # The stored checkpoints by partition, read once for the partitions met after a reset;
        # read again for a partition met at an unexpected offset (another engine may have
        # checkpointed it meanwhile).
        self._stored: dict[int, Checkpoint] | None = None

    @property
    def stations(self) -> int:
        return len(self._station_partition)

    def admit(self, messages: Sequence[Message], pipeline: DetectorPipeline) -> list[Message]:
        """The messages to learn: those not below their partition's checkpoint. A partition met
        first, or at an unexpected offset, is loaded from its checkpoint first."""
        fresh = []
        for m in messages:
            part = self._partitions.get(m.partition)
            if part is None or m.offset != part.next:
                if part is not None:
                    self._stored = None
                part = self._load(m.partition, m.offset, pipeline)
            part.next = m.offset + 1
            if m.offset >= part.skip_below:
                fresh.append(m)
                part.dirty = True
        self._since += len(fresh)
        return fresh

    @property
    def last_seen(self) -> dict[str, int]:
        """Each station held -> bus acceptance time (ms) of its newest message learned."""
        return self._seen

    def is_new(self, station: str) -> bool:
        return station not in self._station_partition

    def learned(
        self, stations: Sequence[str], partitions: Sequence[int], seen: Sequence[int]
    ) -> None:
        """Record the stations of the readings just learned, their partitions and times."""
        for station, partition, at in zip(stations, partitions, seen, strict=True):
            self._station_partition[station] = partition
            if at > self._seen.get(station, -1):
                self._seen[station] = at

    @property
    def pending(self) -> bool:
        """Whether anything learned or read waits for a checkpoint."""
        return bool(self._unacked) or any(p.dirty for p in self._partitions.values())

    def request(self) -> None:
        """Make the next batch take a checkpoint."""
        self._last_ms = None

    def due(self) -> bool:
        if self._last_ms is None:
            return True
        interval_ms = self._settings.checkpoint_interval_s * 1000
        return (
            self._since >= self._settings.checkpoint_max_messages
            or self._clock.now_ms() - self._last_ms >= interval_ms
        )

    def take(self, pipeline: DetectorPipeline) -> list[Checkpoint]:
        """Evict long-silent stations, then a checkpoint of every partition that changed."""
        self._evict(pipeline)
        now = self._clock.now_ms()
        by_partition: dict[int, list[str]] = {}
        for station, partition in self._station_partition.items():
            by_partition.setdefault(partition, []).append(station)
        out = []
        for p, part in self._partitions.items():
            if not part.dirty:
                continue
            stations = by_partition.get(p, [])
            state = _State(
                self._log_id,
                part.base,
                {s: self._seen[s] for s in stations},
                pipeline.dump(stations),
                self._alarms.dump(stations),
            )
            offset = part.base + part.next
            out.append(Checkpoint(self._group, self._topic, p, offset, _ENCODER.encode(state), now))
            part.dirty = False
        self._since = 0
        self._last_ms = now
        return out

    def stored(self, messages: Sequence[Message], checkpointed: bool) -> list[Message]:
        """`messages` are stored; what may be acknowledged now: everything learned when a
        checkpoint was stored with them, else nothing yet."""
        self._unacked.extend(messages)
        if not checkpointed:
            return []
        done, self._unacked = self._unacked, []
        return done

    def reset(self) -> None:
        """The consumer is gone: its successor starts at the acknowledged position, so every
        partition is loaded from its checkpoint again when next met."""
        self._partitions.clear()
        self._unacked.clear()
        self._last_ms = None
        self._stored = None

    def _load(self, partition: int, offset: int, pipeline: DetectorPipeline) -> _Partition:
        held = [s for s, p in self._station_partition.items() if p == partition]
        self._drop(held, pipeline)
        if self._stored is None:
            found = self._store.query(Checkpoints(self._group, self._topic))
            self._stored = {c.partition: c for c in found}
        stored = self._stored.get(partition)
        part = _Partition(base=0, skip_below=0, next=offset)
        self._partitions[partition] = part
        if stored is None:
            return part
        try:
            state = _DECODER.decode(stored.state)
        except msgspec.DecodeError as exc:
            log.warning("ignoring unreadable checkpoint of partition %d: %s", partition, exc)
            part.base = stored.offset
            return part
        if state.log != self._log_id:
            log.info(
                "partition %d: the checkpoint is of another log (%s, now %s): starting afresh",
                partition,
                state.log,
                self._log_id,
            )
            part.base = stored.offset
            return part
        part.base = state.base
        part.skip_below = stored.offset - state.base
        try:
            pipeline.load(state.pipeline)
        except ValueError as exc:
            # A detector that changed (other sensors, another layout) cannot take the state:
            # its stations warm up again, and what the checkpoint covers is still not relearned.
            log.warning("partition %d: detector state not restored, warming up: %s", partition, exc)
            pipeline.forget(list(state.seen))
            return part
        if state.alarms:
            try:
                self._alarms.load(state.alarms)
            except ValueError as exc:
                # The detector state is back, so nothing re-warms; an alarm active at the
                # checkpoint may be raised once more under a new activation.
                log.warning("partition %d: alarm state not restored: %s", partition, exc)
        for station, at in state.seen.items():
            self._station_partition[station] = partition
            self._seen[station] = at
        log.info(
            "partition %d: restored %d stations at offset %d",
            partition,
            len(state.seen),
            part.skip_below,
        )
        return part

    def _evict(self, pipeline: DetectorPipeline) -> None:
        if not self._seen:
            return
        horizon = max(self._seen.values()) - self._settings.evict_silent_after_s * 1000
        silent = [s for s, at in self._seen.items() if at < horizon]
        if silent:
            for station in silent:
                part = self._partitions.get(self._station_partition[station])
                if part is not None:  # else reloaded from its checkpoint when next met
                    part.dirty = True
            self._drop(silent, pipeline)
            self._metrics.stations_evicted.inc(len(silent))
            log.info(
                "evicted %d stations silent for over %g s",
                len(silent),
                self._settings.evict_silent_after_s,
            )

    def _drop(self, stations: list[str], pipeline: DetectorPipeline) -> None:
        if stations:
            pipeline.forget(stations)
            self._alarms.forget(stations)
            for station in stations:
                del self._station_partition[station]
                self._seen.pop(station, None)
