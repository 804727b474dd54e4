"""Alarm onsets, event matching and delays, checked on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from faultline.evaluate.events import (
    ALL_SENSORS,
    Alarms,
    Events,
    alarm_onsets,
    match,
    score_events,
    silence_alarms,
)

S = 1000  # one reading per second


def a(*rows: tuple[int, int, int]) -> Alarms:
    """Alarms from (station, second, mask) triples."""
    station, ts, mask = (np.array(c, np.int64) for c in zip(*rows, strict=True))
    return Alarms(station, ts * S, mask)


def e(*rows: tuple[int, int, int, int]) -> Events:
    """Events from (station, sensor, first second, last second) quadruples."""
    station, sensor, start, end = (np.array(c, np.int64) for c in zip(*rows, strict=True))
    return Events(station, sensor, start * S, end * S)


def test_onsets_are_per_station_whatever_the_interleaving() -> None:
    # Two stations interleaved; station 0 flags seconds 1-2 and 4, station 1 flags 0-3.
    station = np.array([0, 1] * 5)
    ts = np.repeat(np.arange(5), 2) * S
    flagged = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1, 0], bool)
    mask = np.arange(10)
    got = alarm_onsets(station, ts, flagged, mask)
    assert list(zip(got.station, got.ts // S, got.mask, strict=True)) == [
        (1, 0, 1),
        (0, 1, 2),
        (0, 4, 8),
    ]


def test_an_alarm_detects_an_event_from_its_start_to_its_end_plus_grace() -> None:
    events = e((0, 0, 10, 20))
    alarms = a((0, 9, 1), (0, 10, 1), (0, 25, 1), (0, 26, 1))
    m = match(alarms, events, grace_ms=5 * S)
    # 9 is before the start, 26 after end + grace; 10 and 25 both detect, the first counts.
    assert m.alarm_event.tolist() == [-1, 0, 0, -1]
    assert m.detected_at.tolist() == [10 * S]


def test_the_alarm_must_blame_the_faulty_sensor_unless_the_fault_is_station_wide() -> None:
    events = e((0, 2, 10, 10), (1, ALL_SENSORS, 10, 30))
    alarms = a((0, 10, 0b011), (0, 11, 0b100), (1, 31, 0))
    m = match(alarms, events, grace_ms=2 * S)
    assert m.alarm_event.tolist() == [-1, 0, 1]
    assert m.detected_at.tolist() == [11 * S, 31 * S]


def test_other_stations_do_not_match_and_the_grace_may_reach_past_the_next_start() -> None:
    # Station 3: events at 10-12 and 14-20; an alarm at 13 (grace of the first), one at 14
    # (the second event is the latest started: it wins), one at 40 (nothing). Station 4 has none.
    events = e((3, 0, 14, 20), (3, 0, 10, 12))
    alarms = a((3, 13, 1), (3, 14, 1), (3, 40, 1), (4, 11, 1))
    m = match(alarms, events, grace_ms=3 * S)
    assert m.alarm_event.tolist() == [1, 0, -1, -1]
    assert sorted(m.detected_at.tolist()) == [13 * S, 14 * S]


def test_precision_recall_f1_and_delays() -> None:
    # Three events; the first found at once, the second 4 s in, the third missed.
    # Five alarms: two true for event 0 (one late duplicate), one for event 1, two false.
    events = e((0, 0, 100, 110), (1, 1, 200, 200), (2, 0, 300, 320))
    alarms = a((0, 100, 1), (0, 108, 1), (1, 204, 2), (0, 500, 1), (2, 299, 1))
    got = score_events(alarms, events, grace_ms=5 * S, interval_ms=S)
    assert (got.events, got.detected, got.alarms, got.true_alarms) == (3, 2, 5, 3)
    assert got.precision == pytest.approx(3 / 5)
    assert got.recall == pytest.approx(2 / 3)
    assert got.f1 == pytest.approx(2 * 0.6 * (2 / 3) / (0.6 + 2 / 3))
    assert sorted(got.delays.tolist()) == [0, 4]
    assert got.delay(0.5) == 2.0
    assert got.as_json()["delay_p95"] == pytest.approx(3.8)


def test_uncounted_events_take_their_alarms_with_them() -> None:
    events = e((0, 0, 5, 6), (0, 0, 50, 50))
    alarms = a((0, 5, 1), (0, 50, 1), (0, 70, 1))
    got = score_events(alarms, events, 0, S, counted=np.array([False, True]))
    assert (got.events, got.detected, got.alarms, got.true_alarms) == (1, 1, 2, 1)


def test_no_alarms_gives_f1_zero_and_no_events_leaves_recall_undefined() -> None:
    none = Alarms(*(np.empty(0, np.int64) for _ in range(3)))
    got = score_events(none, e((0, 0, 1, 2)), 0, S)
    assert (got.precision, got.recall, got.f1, got.delay(0.5)) == (None, 0.0, 0.0, None)
    empty = Events(*(np.empty(0, np.int64) for _ in range(4)))
    got = score_events(a((0, 1, 1)), empty, 0, S)
    assert (got.precision, got.recall, got.f1) == (0.0, None, None)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="end before it starts"):
        e((0, 0, 5, 4))
    with pytest.raises(ValueError, match="grace"):
        match(a((0, 1, 1)), e((0, 0, 1, 1)), grace_ms=-1)
    with pytest.raises(ValueError, match="interval"):
        score_events(a((0, 1, 1)), e((0, 0, 1, 1)), 0, 0)


def test_silence_is_declared_after_the_health_timeout_once_per_gap() -> None:
    # Station 0 reports at 0, 1, 2, then 20, 21; station 1 at 0..3 then 13 (a 10 s gap: not
    # more than the 10 s timeout). Station 0 is silent from 2 + 10 s + 1 ms.
    station = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0, 1])
    ts = np.array([0, 0, 1, 1, 2, 2, 3, 20, 21, 13]) * S
    got = silence_alarms(station, ts, silent_ms=10 * S)
    assert got.station.tolist() == [0]
    assert got.ts.tolist() == [12 * S + 1]
    dropout = e((0, ALL_SENSORS, 3, 19))
    assert score_events(got, dropout, 1 * S, S).delays.tolist() == [9]
