"""The one settings object.

Settings are read from (highest priority first) explicit overrides given by an entry point,
`FAULTLINE_*` environment variables (nested with `__`, e.g. `FAULTLINE_API__PORT=9000`), a TOML
file, and the defaults below. Only entry points (the CLI, test fixtures) call `load_settings`;
everything else receives the frozen object.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("faultline_config_file", default=None)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SensorSpec(_Frozen):
    """One kind of sensor: its normal behaviour (for the simulator) and its physical range.

    A reading outside [min, max] cannot be a real measurement and is dead-lettered, not scored.
    """

    mean: float
    std: float = Field(gt=0)
    min: float
    max: float
    unit: str = ""

    @model_validator(mode="after")
    def _range_is_ordered(self) -> SensorSpec:
        if not self.min < self.max:
            raise ValueError(f"sensor range min={self.min} must be below max={self.max}")
        return self


DEFAULT_SENSORS: dict[str, SensorSpec] = {
    "temperature": SensorSpec(mean=25.0, std=2.0, min=-60.0, max=200.0, unit="°C"),
    "humidity": SensorSpec(mean=60.0, std=3.0, min=0.0, max=100.0, unit="%"),
    "noise_level": SensorSpec(mean=50.0, std=3.0, min=0.0, max=200.0, unit="dB"),
}


class IngestSettings(_Frozen):
    """What the decoder accepts as a plausible event time, relative to processing time."""

    max_future_s: float = Field(default=300.0, ge=0)
    max_late_s: float = Field(default=7 * 86400.0, gt=0)


class EngineSettings(_Frozen):
    batch_max_records: int = Field(default=5000, ge=1)
    batch_max_wait_s: float = Field(default=0.2, gt=0)
    consumer_group: str = "faultline-engine"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9108, ge=0, le=65535)


class DetectSettings(_Frozen):
    """Per-sensor streaming detector: `surprise` (calibrated views, the default) or `robust_z`.

    `warmup` (readings of a station before its first verdict) serves both; `threshold` and
    `alpha` are robust_z's (in z-scores), `surprise_threshold` surprise's (-log10 p).
    """

    detector: Literal["surprise", "robust_z"] = "surprise"
    threshold: float = Field(default=6.0, gt=0)
    surprise_threshold: float = Field(default=4.0, gt=0)
    warmup: int = Field(default=30, ge=2)
    alpha: float = Field(default=0.02, gt=0, lt=1)


class ModelSettings(_Frozen):
    """Seed 000's model: StandardScaler + IsolationForest, tracked in MLflow."""

    name: str = "faultline-isolation-forest"
    alias: str = "champion"
    n_estimators: int = Field(default=1000, ge=1)
    contamination: float = Field(default=0.00125, gt=0, le=0.5)
    train_samples: int = Field(default=20_000, ge=100)
    seed: int = 0


class SimulateSettings(_Frozen):
    stations: int = Field(default=25, ge=1)
    rate_hz: float = Field(default=1.0, ge=0)
    faults_per_station_hour: float = Field(default=2.0, ge=0)
    seed: int | None = None
    # Replicas of `faultline simulate` each need their own station ids.
    station_prefix: str = Field(default="station_", pattern=r"^[A-Za-z0-9_.:\-]*$", max_length=40)


class ApiSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


class RetentionSettings(_Frozen):
    """How long dead letters are kept and how many of them (the newest), checked every
    `interval_s` by the process that runs the engine."""

    dead_letter_max_age_s: float = Field(default=30 * 86400.0, gt=0)
    dead_letter_max_count: int = Field(default=100_000, ge=0)
    interval_s: float = Field(default=3600.0, gt=0)


class Settings(BaseSettings):
    """Everything Faultline can be told, validated once and then frozen."""

    model_config = SettingsConfigDict(
        env_prefix="FAULTLINE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_dir: Path = Path("data")
    bus_url: str = "memory://"
    store_url: str = ""
    mlflow_uri: str = ""
    readings_topic: str = "faultline.readings"
    sensors: dict[str, SensorSpec] = Field(default_factory=lambda: dict(DEFAULT_SENSORS))
    ingest: IngestSettings = IngestSettings()
    engine: EngineSettings = EngineSettings()
    detect: DetectSettings = DetectSettings()
    model: ModelSettings = ModelSettings()
    simulate: SimulateSettings = SimulateSettings()
    api: ApiSettings = ApiSettings()
    retention: RetentionSettings = RetentionSettings()

    @model_validator(mode="after")
    def _derive_urls(self) -> Settings:
        if not self.sensors:
            raise ValueError("at least one sensor must be configured")
        # Derived defaults live inside the data directory, so one flag moves everything.
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{self.data_dir / 'faultline.db'}")
        if not self.mlflow_uri:
            object.__setattr__(self, "mlflow_uri", f"sqlite:///{self.data_dir / 'mlflow.db'}")
        return self

    @property
    def sensor_names(self) -> tuple[str, ...]:
        """The configured sensors in a fixed order: the column order of every batch."""
        return tuple(self.sensors)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, environment, an optional TOML file and defaults.

    `None` overrides are dropped so that CLI flags left unset do not mask the environment.
    """
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
