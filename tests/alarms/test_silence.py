"""The station-silence condition: raised by time passing alone, cleared by the next report."""

from __future__ import annotations

from faultline.alarms import silence
from faultline.config import AlarmOverride, AlarmRule, AlarmSettings

T0 = 1_767_225_600_000
SETTINGS = AlarmSettings(rule=AlarmRule(silent_after_s=10.0))


def test_a_quiet_station_raises_silent_at_the_moment_it_became_silent() -> None:
    assert silence({"s1": T0}, T0 + 10_000, {}, SETTINGS) == ([], {})
    got, silent = silence({"s1": T0, "s2": T0 + 5_000}, T0 + 10_001, {}, SETTINGS)
    assert [(t.alarm.id, t.action, t.ts) for t in got] == [("s1|*|silent", "raise", T0 + 10_000)]
    assert got[0].severity == "high" and silent == {"s1": T0 + 10_000}
    # A watchdog looking later (or again) gives the same key, and nothing new while silent.
    later, _ = silence({"s1": T0}, T0 + 99_000, {}, SETTINGS)
    assert [t.key for t in later] == [t.key for t in got]
    assert silence({"s1": T0}, T0 + 99_000, silent, SETTINGS) == ([], silent)


def test_reporting_again_clears_it_with_the_reading_that_ended_it() -> None:
    _, silent = silence({"s1": T0}, T0 + 20_000, {}, SETTINGS)
    got, after = silence({"s1": T0 + 25_000}, T0 + 25_500, silent, SETTINGS)
    assert [(t.action, t.ts, t.activation_ts) for t in got] == [("clear", T0 + 25_000, T0 + 10_000)]
    assert got[0].key == f"s1|*|silent|{T0 + 10_000}|clear"
    assert after == {}


def test_a_station_override_sets_its_own_silence() -> None:
    settings = SETTINGS.model_copy(update={"stations": {"slow": AlarmOverride(silent_after_s=60)}})
    got, _ = silence({"slow": T0, "fast": T0}, T0 + 30_000, {}, settings)
    assert [t.alarm.station_id for t in got] == ["fast"]


def test_stations_not_reported_keep_their_state() -> None:
    assert silence({}, T0, {"gone": T0 - 5}, SETTINGS) == ([], {"gone": T0 - 5})


def test_a_return_and_a_new_silence_between_two_looks_are_both_seen() -> None:
    # Silent since T0 + 10 s (the state a checkpoint kept); it reported at T0 + 25 s and fell
    # silent again, and nobody looked in between: a restart replaying from that checkpoint.
    _, silent = silence({"s1": T0}, T0 + 20_000, {}, SETTINGS)
    got, after = silence({"s1": T0 + 25_000}, T0 + 60_000, silent, SETTINGS)
    assert [(t.action, t.ts, t.activation_ts) for t in got] == [
        ("clear", T0 + 25_000, T0 + 10_000),
        ("raise", T0 + 35_000, T0 + 35_000),
    ]
    assert after == {"s1": T0 + 35_000}
    # The same keys as a watchdog that looked in between, so a store that has them keeps its own.
    cleared, between = silence({"s1": T0 + 25_000}, T0 + 25_500, silent, SETTINGS)
    raised, _ = silence({"s1": T0 + 25_000}, T0 + 60_000, between, SETTINGS)
    assert [t.key for t in got] == [t.key for t in cleared + raised]
    # And once its new silence is known, nothing more until it reports again.
    assert silence({"s1": T0 + 25_000}, T0 + 90_000, after, SETTINGS) == ([], after)
