"""The `alarms` settings: frozen, validated, overrides merged default → sensor → station."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from faultline.config import AlarmOverride, AlarmRule, AlarmSettings, SeverityScale, load_settings


def test_a_stations_override_wins_over_a_sensors() -> None:
    s = AlarmSettings(
        rule=AlarmRule(on_delay_readings=5, off_delay_readings=7),
        sensors={"humidity": AlarmOverride(on_delay_readings=2, off_delay_readings=3)},
        stations={"s9": AlarmOverride(on_delay_readings=1)},
    )
    assert s.rule_for("s1", "temperature") == s.rule
    assert (
        s.rule_for("s1", "humidity").on_delay_readings,
        s.rule_for("s1", "humidity").off_delay_readings,
    ) == (2, 3)
    mixed = s.rule_for("s9", "humidity")
    assert (mixed.on_delay_readings, mixed.off_delay_readings) == (1, 3)


def test_overrides_must_name_configured_sensors() -> None:
    with pytest.raises(ValidationError, match="unconfigured sensors"):
        load_settings(alarms={"sensors": {"pressure": {"on_delay_readings": 2}}})


def test_from_the_environment_and_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTLINE_ALARMS__RULE__ON_DELAY_READINGS", "4")
    settings = load_settings()
    assert settings.alarms.rule.on_delay_readings == 4
    with pytest.raises(ValidationError):
        settings.alarms.rule.on_delay_readings = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"rule": {"on_delay_readings": 0}},
        {"rule": {"immediate_severity": "urgent"}},
        {"stations": {"s1": {"off_delay_s": -1}}},
        {"severity": {"surprise": {"medium": 5, "high": 4, "critical": 9}}},
        {"rule": {"bogus": 1}},
    ],
)
def test_invalid_alarm_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_settings(alarms=bad)


def test_severity_thresholds_must_ascend() -> None:
    with pytest.raises(ValidationError, match="must ascend"):
        SeverityScale(medium=4, high=4, critical=8)


@pytest.mark.parametrize("name", ["*", "a|b", ""])
def test_a_sensor_name_that_would_make_alarm_ids_ambiguous_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="sensor names must be non-empty"):
        load_settings(sensors={name: {"mean": 1, "std": 1, "min": 0, "max": 2}})
