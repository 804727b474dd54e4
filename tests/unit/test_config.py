from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from faultline.config import load_settings


def test_defaults_derive_urls_from_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.store_url == f"sqlite:///{tmp_path / 'faultline.db'}"
    assert s.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.sensor_names == ("temperature", "humidity", "noise_level")
    assert s.bus_url == f"sqlite:///{tmp_path / 'bus.db'}"  # durable: a 202 survives kill -9


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.bus_url = "kafka://x"  # type: ignore[misc]


def test_priority_overrides_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "faultline.toml"
    config.write_text(
        'bus_url = "kafka://file:9092"\n'
        '[api]\nport = 7000\nhost = "0.0.0.0"\n'
        "[sensors.pressure]\nmean = 1.0\nstd = 0.1\nmin = 0\nmax = 10\n"
    )
    monkeypatch.setenv("FAULTLINE_API__PORT", "7100")
    s = load_settings(config, bus_url="kafka://flag:9092")
    assert s.bus_url == "kafka://flag:9092"
    assert s.api.port == 7100
    assert s.api.host == "0.0.0.0"
    assert s.sensor_names == ("pressure",)


def test_none_overrides_do_not_mask_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTLINE_BUS_URL", "kafka://env:9092")
    assert load_settings(bus_url=None).bus_url == "kafka://env:9092"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"sensors": {}}, "at least one sensor"),
        ({"sensors": {"t": {"mean": 1, "std": 1, "min": 5, "max": 1}}}, "must be below"),
        ({"sensors": {"t": {"mean": 1, "std": 0, "min": 0, "max": 1}}}, "greater than 0"),
        ({"api": {"port": 70000}}, "less than or equal"),
        ({"unknown_field": 1}, "Extra inputs"),
        ({"engine": {"checkpoint_interval_s": 0}}, "checkpoint_interval_s"),
        ({"engine": {"checkpoint_max_messages": 0}}, "checkpoint_max_messages"),
        ({"engine": {"max_stations": 0}}, "max_stations"),
        ({"engine": {"evict_silent_after_s": -1}}, "evict_silent_after_s"),
    ],
)
def test_invalid_settings_are_refused_with_a_message(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        load_settings(**overrides)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")
