"""Alarm-load figures over transitions."""

from __future__ import annotations

from datetime import date

from faultline.alarm_schema import ANOMALY, AlarmKey, AlarmTransition
from faultline.alarms import alarm_load
from faultline.alarms.load import bad_actors, chattering, per_10_minutes, per_station_day, standing

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
HOUR = 3_600_000
A, B = AlarmKey("s1", "temperature", ANOMALY), AlarmKey("s2", "*", ANOMALY)


def raise_(key: AlarmKey, at: int) -> AlarmTransition:
    return AlarmTransition(key, "raise", at, at)


def clear(key: AlarmKey, activation: int, at: int) -> AlarmTransition:
    return AlarmTransition(key, "clear", at, activation)


def test_per_10_minutes_and_per_station_day() -> None:
    ts = [raise_(A, T0), raise_(A, T0 + 9 * MIN), raise_(B, T0 + 25 * MIN), clear(A, T0, T0 + 1)]
    assert per_10_minutes(ts, T0, T0 + 30 * MIN) == [2, 0, 1]
    assert per_10_minutes(ts, T0, T0) == []
    late = raise_(A, T0 + 25 * HOUR)
    assert per_station_day([*ts, late]) == {
        ("s1", date(2026, 1, 1)): 2,
        ("s2", date(2026, 1, 1)): 1,
        ("s1", date(2026, 1, 2)): 1,
    }


def test_bad_actors_most_frequent_first() -> None:
    keys = [AlarmKey(f"s{i}", "*", ANOMALY) for i in range(12)]
    ts = [raise_(k, T0 + j) for i, k in enumerate(keys) for j in range(i + 1)]
    top = bad_actors(ts)
    assert len(top) == 10
    assert top[0] == (keys[11], 12) and top[-1] == (keys[2], 3)


def test_chattering_is_three_activations_within_a_minute() -> None:
    chatty = [raise_(A, T0), raise_(A, T0 + 30_000), raise_(A, T0 + MIN)]
    spread = [raise_(B, T0), raise_(B, T0 + 40_000), raise_(B, T0 + 80_001)]
    assert chattering(chatty + spread) == [A]


def test_standing_is_active_for_more_than_a_day() -> None:
    ts = [raise_(A, T0), raise_(B, T0 + HOUR), clear(B, T0 + HOUR, T0 + 2 * HOUR)]
    assert standing(ts, T0 + 24 * HOUR) == []
    assert standing(ts, T0 + 24 * HOUR + 1) == [(A, T0)]
    # A clear after `now` has not happened yet.
    assert standing(ts, T0 + 26 * HOUR) == [(A, T0)]
    again = [*ts, clear(A, T0, T0 + 30 * HOUR)]
    assert standing(again, T0 + 31 * HOUR) == []


def test_alarm_load_of_a_period() -> None:
    ts = [raise_(A, T0), raise_(A, T0 + 1000), raise_(A, T0 + 2000), raise_(B, T0 + 20 * MIN)]
    load = alarm_load(ts, T0, T0 + 30 * MIN)
    assert load.activations == 4 and load.peak_10_minutes == 3
    assert load.chattering == [A] and load.bad_actors[0] == (A, 3)
