"""The engine makes alarms where it makes verdicts: anomaly transitions from each scored batch,
silence from a timer, both in the batch's store write and both checkpointed, so a crashed and
restarted engine writes the same transitions as one that never stopped."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from faultline.alarm_schema import AlarmTransition
from faultline.bus import MemoryBus, Record
from faultline.clock import ManualClock
from faultline.codec import ReadingDecoder, encode_reading
from faultline.config import Settings, load_settings
from faultline.detect import DetectorPipeline
from faultline.detect.surprise import SurpriseDetector
from faultline.engine import Engine
from faultline.metrics import Metrics
from faultline.schema import WriteBatch
from faultline.store import MemoryStore, Store, StoreError, TransitionFeed
from faultline.store.forwarding import ForwardingStore

TOPIC = "readings"
T0 = 1_767_225_600_000
SENSORS = ("temperature", "humidity", "noise_level")
# Short delays so that a few hundred readings make whole alarms.
ALARMS = {
    "warmup_readings": 60,
    "rule": {"on_delay_readings": 5, "off_delay_readings": 10},
}


class Crash(BaseException):
    """The process dies: not an error the engine could retry."""


class Recorder(ForwardingStore):
    """A real store that remembers the alarm transitions of every committed write, and may die
    right after its `crash_after`-th write committed (a unit-level fault injector)."""

    def __init__(self, inner: Store, crash_after: int | None = None) -> None:
        super().__init__(inner)
        self.crash_after = crash_after
        self.writes = 0
        self.transitions: list[AlarmTransition] = []

    def write(self, batch: WriteBatch) -> None:
        self.inner.write(batch)
        self.transitions += batch.alarm_transitions
        self.writes += 1
        if self.writes == self.crash_after:
            raise Crash


def settings(**engine: Any) -> Settings:
    base = {"batch_max_records": 40, "batch_max_wait_s": 0.01, "checkpoint_interval_s": 3600}
    return load_settings(engine={**base, "checkpoint_max_messages": 100, **engine}, alarms=ALARMS)


def make_engine(
    bus: MemoryBus, store: Store, s: Settings, clock: ManualClock, retry_backoff_s: float = 0.5
) -> Engine:
    return Engine(
        bus=bus,
        topic=TOPIC,
        store=store,
        decoder=ReadingDecoder(s.sensors, s.ingest),
        pipeline=DetectorPipeline([SurpriseDetector(SENSORS, warmup=20)]),
        settings=s.engine,
        metrics=Metrics(),
        alarms=s.alarms,
        clock=clock,
        retry_backoff_s=retry_backoff_s,
    )


def shifted(stations: int, rounds: int, shift: tuple[int, int], seed: int = 0) -> list[Record]:
    """Noisy readings one second apart per station; station s0's temperature is 40 higher over
    the rounds in `shift` (a level shift and its return)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rounds):
        for k in range(stations):
            station = f"s{k}"
            values = {"temperature": 25 + rng.normal(0, 1), "humidity": 60 + rng.normal(0, 2)}
            if k == 0 and shift[0] <= i < shift[1]:
                values["temperature"] += 40
            out.append(Record(encode_reading(station, T0 + i * 1000, i, values), station.encode()))
    return out


def drain(engine: Engine) -> None:
    while engine.step() is not None:
        pass
    engine.checkpoint(threading.Event())


def keyed(transitions: Sequence[AlarmTransition]) -> dict[str, AlarmTransition]:
    return {t.key: t for t in transitions}


def test_a_level_shift_is_one_alarm_raised_and_cleared_in_the_batches_written() -> None:
    s = settings()
    bus, clock = MemoryBus(clock=ManualClock(T0 + 500_000)), ManualClock(T0 + 500_000)
    bus.publish(TOPIC, shifted(stations=2, rounds=300, shift=(150, 200)))
    store = Recorder(MemoryStore())
    engine = make_engine(bus, store, s, clock)
    drain(engine)
    anomaly = [t for t in store.transitions if t.alarm.kind == "anomaly"]
    actions = [(t.alarm.station_id, t.alarm.sensor, t.action) for t in anomaly]
    assert actions[0] == ("s0", "temperature", "raise")
    assert actions[-1] == ("s0", "temperature", "clear")
    assert [a for a in actions if a[2] == "raise"] == [("s0", "temperature", "raise")]
    raise_ = anomaly[0]
    assert T0 + 150_000 <= raise_.ts <= T0 + 155_000  # within the on-delay of the shift
    assert dict(raise_.sensors)["temperature"] > 0.5
    # The detector adapts to the new level and the alarm clears; the deadband keeps the
    # return to the old level from raising a second one.
    assert anomaly[-1].activation_ts == raise_.ts


@pytest.mark.parametrize("crash_after", [3, 5, 8])
def test_a_crashed_engine_writes_the_same_transitions_as_one_that_never_stopped(
    crash_after: int,
) -> None:
    s = settings()
    data = shifted(stations=2, rounds=300, shift=(150, 200))

    def run(crash: int | None) -> list[AlarmTransition]:
        bus, inner = MemoryBus(clock=ManualClock(T0 + 500_000)), MemoryStore()
        bus.publish(TOPIC, data)
        store = Recorder(inner, crash)
        if crash is not None:
            with pytest.raises(Crash):
                drain(make_engine(bus, store, s, ManualClock(T0 + 500_000)))
            assert bus.lag(TOPIC, s.engine.consumer_group) > 0
        drain(make_engine(bus, store, s, ManualClock(T0 + 500_000)))
        return store.transitions

    straight = [t for t in run(None) if t.alarm.kind == "anomaly"]
    resumed = [t for t in run(crash_after) if t.alarm.kind == "anomaly"]
    assert straight, "the level shift raised no alarm"
    # Replayed batches repeat some transitions (the store ignores them by key); none differs,
    # none is missing, and no activation is new.
    assert keyed(resumed) == keyed(straight)
    assert {t.activation_ts for t in resumed} == {t.activation_ts for t in straight}


def test_a_station_that_stops_sending_is_silent_until_it_reports_again() -> None:
    s = settings()
    bus_clock, clock = ManualClock(T0 + 100_000), ManualClock(T0 + 100_000)
    bus = MemoryBus(clock=bus_clock)
    store = Recorder(MemoryStore())
    engine = make_engine(bus, store, s, clock)
    bus.publish(TOPIC, shifted(stations=2, rounds=30, shift=(0, 0)))
    drain(engine)
    assert not [t for t in store.transitions if t.alarm.kind == "silent"]

    # Nothing arrives: the idle engine's watchdog raises it, dated when the silence began.
    clock.advance(s.alarms.rule.silent_after_s + 5)
    engine.step()
    silent = [t for t in store.transitions if t.alarm.kind == "silent"]
    assert sorted((t.alarm.station_id, t.action) for t in silent) == [
        ("s0", "raise"),
        ("s1", "raise"),
    ]
    began = T0 + 100_000 + round(s.alarms.rule.silent_after_s * 1000)
    assert {t.activation_ts for t in silent} == {began}
    assert {t.severity for t in silent} == {s.alarms.silent_severity}
    clock.advance(5)
    engine.step()  # still silent: nothing new
    assert len([t for t in store.transitions if t.alarm.kind == "silent"]) == 2

    # s0 reports again: its silence clears at that reading; s1 stays silent.
    bus_clock.advance(20)
    bus.publish(TOPIC, [Record(encode_reading("s0", T0 + 40_000, 40, {"temperature": 25}), b"s0")])
    clock.advance(1)
    drain(engine)
    clears = [t for t in store.transitions if t.alarm.kind == "silent" and t.action == "clear"]
    assert [(t.alarm.station_id, t.ts, t.activation_ts) for t in clears] == [
        ("s0", bus_clock.now_ms(), began)
    ]
    assert set(engine.alarms.silent) == {"s1"}


def test_silence_is_not_judged_while_the_engine_works_through_a_backlog() -> None:
    s = settings()
    clock = ManualClock(T0 + 10**7)  # everything on the bus is long past
    bus = MemoryBus(clock=ManualClock(T0 + 100_000))
    bus.publish(TOPIC, shifted(stations=2, rounds=100, shift=(0, 0)))
    store = Recorder(MemoryStore())
    engine = make_engine(bus, store, s, clock)
    result = engine.step()
    assert result is not None and result.messages == s.engine.batch_max_records  # a full batch
    assert store.transitions == []  # behind: a station's newest readings may still wait
    drain(engine)  # caught up: now the old stations are silent
    assert {t.alarm.station_id for t in store.transitions if t.alarm.kind == "silent"} == {
        "s0",
        "s1",
    }


def test_a_silence_survives_a_restart_and_the_eviction_of_its_station() -> None:
    s = settings(evict_silent_after_s=60)
    bus_clock, clock = ManualClock(T0 + 100_000), ManualClock(T0 + 100_000)
    bus, inner = MemoryBus(clock=bus_clock), MemoryStore()
    bus.publish(TOPIC, shifted(stations=2, rounds=30, shift=(0, 0)))
    first = make_engine(bus, Recorder(inner), s, clock)
    drain(first)
    clock.advance(30)
    first.step()
    assert set(first.alarms.silent) == {"s0", "s1"}
    # s1 keeps reporting long enough for s0 to be evicted, then the engine stops cleanly.
    for i in range(3):
        bus_clock.advance(40)
        clock.advance(40)
        bus.publish(
            TOPIC,
            [
                Record(
                    encode_reading("s1", T0 + (31 + i) * 1000, 31 + i, {"temperature": 25}), b"s1"
                )
            ],
        )
        drain(first)
    assert first.checkpointer.is_new("s0")  # evicted
    first.close()

    store = Recorder(inner)
    second = make_engine(bus, store, s, clock)
    bus_clock.advance(30)  # s0 reports again, now
    bus.publish(TOPIC, [Record(encode_reading("s0", T0 + 50_000, 50, {"temperature": 25}), b"s0")])
    drain(second)
    clears = [t for t in store.transitions if t.action == "clear" and t.alarm.kind == "silent"]
    assert [t.alarm.station_id for t in clears] == ["s0"]
    assert "s0" not in second.alarms.silent


class Failing(Recorder):
    """Refuses its first `failures` writes as an unreachable store would (unit-level)."""

    def __init__(self, inner: Store, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures

    def write(self, batch: WriteBatch) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("the store is unreachable")
        super().write(batch)


def test_a_batch_written_after_an_outage_is_stamped_when_it_was_stored() -> None:
    s = settings()
    clock = ManualClock(T0 + 100_000)
    bus = MemoryBus(clock=ManualClock(T0 + 100_000))
    bus.publish(TOPIC, shifted(stations=1, rounds=20, shift=(0, 0)))
    store = Failing(MemoryStore(), failures=3)
    engine = make_engine(bus, store, s, clock, retry_backoff_s=0.001)
    clock.advance(30)  # the engine's clock runs on while it waits for the store...
    stop = threading.Event()
    started = clock.now_ms()
    messages = engine.poll()
    prepared = engine.prepare(messages)
    clock.advance(45)  # ...through the outage
    assert engine.commit(messages, prepared, stop)
    # The silence alarm (the station's readings are long past) carries the time it was stored,
    # not the time its batch was first tried: the notifier reads the log in that order.
    (row,) = store.query(TransitionFeed())
    assert prepared.batch.processed_at == started
    assert row.recorded_at == clock.now_ms() == started + 45_000
