"""The tracker: on-delay, off-delay, deadband, warm-up and gaps, severity and shares, and the
same transitions whatever the batch boundaries or a snapshot and restore between them."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultline.alarm_schema import AlarmTransition
from faultline.alarms import AlarmTracker, TrackerState
from faultline.config import AlarmOverride, AlarmRule, AlarmSettings
from faultline.schema import IS_ANOMALY, SENSOR_MASK, STATION_ID, TS, score_column

SENSORS = ("temperature", "humidity", "noise_level")
T0 = 1_767_225_600_000
TEMP, HUM = 1, 2  # sensor mask bits


def rule(**fields: object) -> AlarmSettings:
    base = {"on_delay_readings": 3, "off_delay_readings": 2, "deadband_s": 0.0}
    return AlarmSettings(rule=AlarmRule(**{**base, **fields}), warmup_readings=0)  # type: ignore[arg-type]


def frame(
    flags: Sequence[int],
    *,
    station: str = "s1",
    mask: int = TEMP,
    scores: Sequence[float] | None = None,
    interval_ms: int = 1000,
    start: int = T0,
) -> pd.DataFrame:
    n = len(flags)
    return pd.DataFrame(
        {
            STATION_ID: [station] * n,
            TS: start + interval_ms * np.arange(n, dtype=np.int64),
            IS_ANOMALY: np.asarray(flags, bool),
            SENSOR_MASK: np.where(np.asarray(flags, bool), mask, 0).astype(np.int64),
            score_column("surprise"): np.zeros(n) if scores is None else np.asarray(scores),
        }
    )


def run(settings: AlarmSettings, batch: pd.DataFrame) -> list[AlarmTransition]:
    out, _ = AlarmTracker(settings, SENSORS).step(batch, TrackerState())
    return out


def actions(transitions: Sequence[AlarmTransition]) -> list[tuple[str, int]]:
    return [(t.action, (t.ts - T0) // 1000) for t in transitions]


def test_the_on_delay_needs_the_condition_for_n_readings_in_a_row() -> None:
    got = run(rule(), frame([1, 1, 0, 1, 1, 1, 1, 0, 0, 0]))
    assert actions(got) == [("raise", 5), ("clear", 8)]
    raise_ = got[0]
    assert raise_.alarm.id == "s1|temperature|anomaly"
    assert raise_.key == f"s1|temperature|anomaly|{T0 + 5000}|raise"
    assert got[1].activation_ts == raise_.ts


def test_the_on_delay_in_seconds_counts_event_time() -> None:
    settings = rule(on_delay_readings=1, on_delay_s=2.5)
    assert actions(run(settings, frame([1, 1, 1, 1, 0, 0]))) == [("raise", 3), ("clear", 5)]


def test_a_severe_reading_alarms_without_waiting_for_the_on_delay() -> None:
    got = run(rule(), frame([0, 1, 0, 0, 0], scores=[0, 9.0, 0, 0, 0]))
    assert actions(got) == [("raise", 1), ("clear", 3)]
    assert got[0].severity == "high"
    settings = rule(immediate_severity="critical")
    assert run(settings, frame([0, 1, 0, 0, 0], scores=[0, 9.0, 0, 0, 0])) == []


def test_the_off_delay_bridges_gaps_shorter_than_it() -> None:
    settings = rule(on_delay_readings=1, off_delay_readings=3)
    got = run(settings, frame([1, 0, 0, 1, 0, 1, 0, 0, 0, 1]))
    assert actions(got) == [("raise", 0), ("clear", 8), ("raise", 9)]


def test_the_off_delay_in_seconds() -> None:
    settings = rule(on_delay_readings=1, off_delay_readings=1, off_delay_s=3.0)
    assert actions(run(settings, frame([1, 0, 0, 0, 0, 0]))) == [("raise", 0), ("clear", 4)]


def test_the_deadband_keeps_a_cleared_alarm_from_returning_at_once() -> None:
    flags = [1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    by_time = rule(on_delay_readings=1, off_delay_readings=1, deadband_s=5.0)
    # Readings 2, 3 and 5 come within 5 s of the clear at 1.
    assert actions(run(by_time, frame(flags))) == [("raise", 0), ("clear", 1), ("raise", 11)]
    by_readings = rule(on_delay_readings=1, off_delay_readings=1, deadband_readings=2)
    assert actions(run(by_readings, frame(flags))) == [
        ("raise", 0),
        ("clear", 1),
        ("raise", 5),
        ("clear", 6),
        ("raise", 11),
    ]


def test_the_deadband_is_per_alarm_a_condition_of_another_sensor_is_not_held_back() -> None:
    settings = rule(on_delay_readings=1, off_delay_readings=1, deadband_s=60.0)
    batch = pd.concat([frame([1, 0]), frame([1, 0], mask=HUM, start=T0 + 2000)], ignore_index=True)
    got = run(settings, batch)
    assert [(t.action, t.alarm.sensor) for t in got] == [
        ("raise", "temperature"),
        ("clear", "temperature"),
        ("raise", "humidity"),
        ("clear", "humidity"),
    ]


def test_the_deadband_holds_for_every_sensor_the_cleared_alarm_blamed() -> None:
    settings = rule(on_delay_readings=1, off_delay_readings=1, deadband_s=60.0)
    # A temperature alarm whose readings also blamed humidity (a drift judged on both), then a
    # humidity condition within the deadband: the same condition ending, not a new alarm.
    both = frame([1, 1, 0], mask=TEMP | HUM, scores=[0, 0, 0])
    temperature_first = frame([1], mask=TEMP, start=T0 - 1000)
    humidity = frame([1, 0], mask=HUM, start=T0 + 3000)
    later = frame([0] * 66 + [1, 0], mask=HUM, start=T0 + 5000)  # no gap: readings go on
    batch = pd.concat([temperature_first, both, humidity, later], ignore_index=True)
    got = run(settings, batch)
    assert [(t.action, t.alarm.sensor, (t.ts - T0) // 1000) for t in got] == [
        ("raise", "temperature", -1),
        ("clear", "temperature", 2),
        ("raise", "humidity", 71),  # outside the deadband: a new condition
        ("clear", "humidity", 72),
    ]
    assert dict(got[0].sensors) == {"temperature": 1.0}
    assert set(dict(got[1].sensors)) == {"temperature", "humidity"}


def test_no_alarm_from_a_stations_warm_up() -> None:
    settings = AlarmSettings(rule=AlarmRule(on_delay_readings=1), warmup_readings=4)
    got = run(settings, frame([1, 1, 1, 1, 0, 1]))
    assert actions(got)[0] == ("raise", 5)


def test_readings_right_after_a_silence_raise_no_alarm() -> None:
    settings = rule(on_delay_readings=1, silent_after_s=10.0, resume_readings=2)
    before = frame([0, 0])
    after = frame([1, 1, 1, 0, 0], start=T0 + 60_000)
    got = run(settings, pd.concat([before, after], ignore_index=True))
    assert [(t.action, (t.ts - T0) // 1000) for t in got] == [("raise", 62), ("clear", 64)]


def test_escalation_and_the_sensors_responsible_with_their_share() -> None:
    settings = rule(on_delay_readings=2, off_delay_readings=1)
    batch = frame([1, 1, 1, 0], mask=TEMP | HUM, scores=[0, 0, 20.0, 0])
    batch.loc[0, SENSOR_MASK] = TEMP
    got = run(settings, batch)
    assert [t.action for t in got] == ["raise", "escalate", "clear"]
    raise_, escalate, clear = got
    # Reading 0 weighs 1 (all temperature), reading 1 weighs 1 split over two sensors.
    assert raise_.sensors == (("temperature", 0.75), ("humidity", 0.25))
    assert raise_.alarm.sensor == "temperature" and raise_.severity == "low"
    assert escalate.severity == "critical" and escalate.key.endswith("|escalate|critical")
    # Reading 2 weighs 1 + 20 / 4 = 6, half to each.
    assert clear.sensors == (("temperature", 0.562), ("humidity", 0.438))


def test_a_verdict_blaming_no_sensor_is_a_station_wide_alarm() -> None:
    got = run(rule(on_delay_readings=1), frame([1, 0, 0], mask=0))
    assert got[0].alarm.id == "s1|*|anomaly"


def test_overrides_per_sensor_and_per_station() -> None:
    settings = AlarmSettings(
        rule=AlarmRule(on_delay_readings=5, off_delay_readings=1),
        sensors={"humidity": AlarmOverride(on_delay_readings=2)},
        stations={"s2": AlarmOverride(on_delay_readings=1)},
        warmup_readings=0,
    )
    flags = [1, 1, 1, 0]
    assert run(settings, frame(flags)) == []
    assert actions(run(settings, frame(flags, mask=HUM)))[0] == ("raise", 1)
    assert actions(run(settings, frame(flags, mask=HUM, station="s2")))[0] == ("raise", 0)


def test_stations_are_independent_and_interleave() -> None:
    a, b = frame([1, 1, 1, 0, 0]), frame([0, 1, 1, 1, 0, 0], station="s2")
    interleaved = pd.concat([a, b]).sort_values(TS, kind="stable").reset_index(drop=True)
    got = run(rule(), interleaved)
    assert sorted(got, key=lambda t: t.key) == sorted(
        run(rule(), a) + run(rule(), b), key=lambda t: t.key
    )


def stream(seed: int, stations: int = 3, n: int = 300) -> pd.DataFrame:
    """Stations reporting together, with flickering conditions, severe spikes and a gap."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(stations):
        flags = (rng.random(n) < 0.3) & (np.repeat(rng.random(n // 10) < 0.5, 10))
        part = frame(flags.astype(int).tolist(), station=f"s{k}", mask=0)
        part[SENSOR_MASK] = np.where(flags, rng.integers(1, 8, n), 0)
        part[score_column("surprise")] = np.where(rng.random(n) < 0.03, rng.uniform(3, 20, n), 0)
        gap = 100 + 7 * k
        back = slice(gap + 30, gap + 34)  # a severe condition just after a silence
        part.loc[part.index[back], [IS_ANOMALY, SENSOR_MASK, score_column("surprise")]] = [
            True,
            TEMP,
            12.0,
        ]
        keep = np.ones(n, bool)
        keep[gap : gap + 30] = False
        parts.append(part[keep])
    return pd.concat(parts).sort_values(TS, kind="stable").reset_index(drop=True)


STREAM_SETTINGS = AlarmSettings(
    rule=AlarmRule(on_delay_readings=3, off_delay_readings=4, deadband_s=8, resume_readings=3),
    warmup_readings=5,
)


def in_batches(batch: pd.DataFrame, cuts: Sequence[int], snapshot_at: int | None) -> list[str]:
    tracker = AlarmTracker(STREAM_SETTINGS, SENSORS)
    state = TrackerState()
    out: list[AlarmTransition] = []
    bounds = [0, *sorted(set(cuts)), len(batch)]
    for i, (lo, hi) in enumerate(pairwise(bounds)):
        if i == snapshot_at:
            state = TrackerState.restore(state.snapshot())
        got, state = tracker.step(batch.iloc[lo:hi], state)
        out.extend(got)
    return sorted(repr(t) for t in out)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 700), max_size=12),
    snapshot_at=st.none() | st.integers(0, 12),
)
def test_same_transitions_whatever_the_batch_boundaries_and_snapshots(
    seed: int, cuts: list[int], snapshot_at: int | None
) -> None:
    batch = stream(seed)
    whole = in_batches(batch, [], None)
    assert whole, "the stream should raise some alarms"
    assert in_batches(batch, [c for c in cuts if c <= len(batch)], snapshot_at) == whole


def test_replaying_a_batch_from_its_starting_state_gives_the_same_keys() -> None:
    tracker = AlarmTracker(STREAM_SETTINGS, SENSORS)
    batch = stream(1)
    first, _ = tracker.step(batch, TrackerState())
    again, _ = tracker.step(batch, TrackerState.restore(TrackerState().snapshot()))
    assert [t.key for t in first] == [t.key for t in again]
    assert len({t.key for t in first}) == len(first)


def test_step_leaves_the_given_state_as_it_was() -> None:
    tracker = AlarmTracker(STREAM_SETTINGS, SENSORS)
    batch = stream(2)
    _, middle = tracker.step(batch.iloc[:400], TrackerState())
    before = middle.snapshot()
    tracker.step(batch.iloc[400:], middle)
    assert middle.snapshot() == before


def test_a_partitions_snapshot_restores_only_its_stations() -> None:
    tracker = AlarmTracker(STREAM_SETTINGS, SENSORS)
    _, state = tracker.step(stream(3), TrackerState())
    part = TrackerState.restore(state.snapshot(["s1"]))
    assert set(part.stations) == {"s1"}
    assert TrackerState().merged(part).snapshot() == state.snapshot(["s1"])
    assert len(state.snapshot()) < 2000  # cheap: a few numbers per station


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"not zlib", "not an alarm tracker snapshot"),
        (TrackerState().snapshot()[:-3], "not an alarm tracker snapshot"),
    ],
)
def test_a_damaged_snapshot_is_refused(blob: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerState.restore(blob)


def test_a_snapshot_of_another_version_or_shape_is_refused() -> None:
    import json
    import zlib

    def blob(body: object) -> bytes:
        return zlib.compress(json.dumps(body).encode())

    with pytest.raises(ValueError, match="unknown version"):
        TrackerState.restore(blob({"version": 99, "stations": {}}))
    with pytest.raises(ValueError, match="malformed"):
        TrackerState.restore(blob({"version": 1, "stations": {"s1": [1, 2]}}))
    with pytest.raises(ValueError, match="lacks its stations"):
        TrackerState.restore(blob({"version": 1}))


def test_one_reading_per_batch_gives_the_same_transitions() -> None:
    batch = stream(4)
    assert in_batches(batch, list(range(len(batch))), 300) == in_batches(batch, [], None)
