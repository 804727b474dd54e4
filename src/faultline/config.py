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
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
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
    `load_coupling` is the simulator's correlation of the sensor with its station's load (a
    shared, slowly wandering signal; faultline.simulate.simulator): two sensors with couplings a
    and b move together with correlation a·b, and a relation fault breaks that and nothing else.
    """

    mean: float
    std: float = Field(gt=0)
    min: float
    max: float
    unit: str = ""
    load_coupling: float = Field(default=0.0, ge=-1.0, le=1.0)

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

# The same sensors on a station whose machine's load drives them as physics does: more load,
# more heat and more noise; warmer air holding the same water has a lower relative humidity.
COUPLED_SENSORS: dict[str, SensorSpec] = {
    name: spec.model_copy(update={"load_coupling": coupling})
    for (name, spec), coupling in zip(DEFAULT_SENSORS.items(), (0.8, -0.7, 0.8), strict=True)
}


class IngestSettings(_Frozen):
    """What the decoder accepts as a plausible event time, relative to processing time."""

    max_future_s: float = Field(default=300.0, ge=0)
    max_late_s: float = Field(default=7 * 86400.0, gt=0)


class EngineSettings(_Frozen):
    """Micro-batches, checkpoints of the detector state (faultline.engine.checkpoint) and the
    bound on the stations held.

    A checkpoint is taken every `checkpoint_interval_s` or `checkpoint_max_messages`, whichever
    comes first; the bus is acknowledged only up to checkpoints, so `checkpoint_max_messages`
    must stay below what the bus holds unacknowledged (the memory bus: 100,000). Readings of a
    new station beyond `max_stations` are dead letters; a station silent for
    `evict_silent_after_s` of log time is forgotten and starts afresh if it returns.
    """

    batch_max_records: int = Field(default=5000, ge=1)
    batch_max_wait_s: float = Field(default=0.2, gt=0)
    consumer_group: str = "faultline-engine"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    checkpoint_interval_s: float = Field(default=1.0, gt=0)
    checkpoint_max_messages: int = Field(default=50_000, ge=1)
    max_stations: int = Field(default=10_000, ge=1)
    evict_silent_after_s: float = Field(default=7 * 86400.0, gt=0)


class DetectSettings(_Frozen):
    """The streaming detector: `surprise` (per-sensor calibrated views, the default), `robust_z`,
    or `relations` (a station's sensors together, faultline.detect.relations). Every detector,
    in the engines and in `faultline eval`, is built from these (faultline.detect.factory).

    `warmup` (readings of a station before its first verdict) serves all; surprise then scores a
    station but raises no alarm until each sensor has learned `calibrating` readings (its tail
    estimates are too young before: decision 0020). `threshold` and
    `alpha` are robust_z's (in z-scores), `surprise_threshold` surprise's and
    `relations_threshold` relations' (both -log10 p); `band_window` seed 003's band filter's
    (an `eval` baseline).
    """

    detector: Literal["surprise", "robust_z", "relations"] = "surprise"
    threshold: float = Field(default=6.0, gt=0)
    surprise_threshold: float = Field(default=4.0, gt=0)
    relations_threshold: float = Field(default=4.0, gt=0)
    warmup: int = Field(default=100, ge=2)
    calibrating: int = Field(default=300, ge=0)
    alpha: float = Field(default=0.02, gt=0, lt=1)
    band_window: int = Field(default=60, ge=3)


class ModelSettings(_Frozen):
    """Seed 000's model: StandardScaler + IsolationForest, tracked in MLflow.

    `alias` is the version that serves; `faultline train --from --to` registers its models
    under `challenger_alias`, which only an explicit promotion moves to `alias`.
    """

    name: str = "faultline-isolation-forest"
    alias: str = "champion"
    challenger_alias: str = "challenger"
    n_estimators: int = Field(default=1000, ge=1)
    contamination: float = Field(default=0.00125, gt=0, le=0.5)
    train_samples: int = Field(default=20_000, ge=100)
    seed: int = 0
    # Whether the forest's verdicts count in the detector set's OR, or it contributes its score
    # only (docs/decisions/0020); its own decision for seed 000's /predict is unchanged.
    forest_verdicts: bool = False

    @model_validator(mode="after")
    def _aliases_differ(self) -> ModelSettings:
        if self.alias == self.challenger_alias:
            raise ValueError(f"model alias and challenger_alias are both {self.alias!r}")
        return self


class SimulateSettings(_Frozen):
    stations: int = Field(default=25, ge=1)
    rate_hz: float = Field(default=1.0, ge=0)
    faults_per_station_hour: float = Field(default=2.0, ge=0)
    seed: int | None = None
    # Replicas of `faultline simulate` each need their own station ids.
    station_prefix: str = Field(default="station_", pattern=r"^[A-Za-z0-9_.:\-]*$", max_length=40)


class MqttSettings(_Frozen):
    """How `faultline ingest mqtt` signs in to its broker (docs/SECURITY.md).

    The broker URL carries no secret: the password is `password` (its own variable,
    FAULTLINE_MQTT__PASSWORD) or the first line of `password_file`. With an mqtts:// broker the
    broker's certificate is checked against `ca_file`, or the system's CAs when unset.
    """

    username: str = ""
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set mqtt.password or mqtt.password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("an MQTT password needs mqtt.username")
        return self


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class ApiSettings(_Frozen):
    """Where the API listens and what it lets in (docs/SECURITY.md).

    `allowed_hosts`: the Host header values (without port) the API answers; unset means the
    loopback names when it listens on loopback, and any name otherwise (then every read needs a
    token anyway). `reads_need_token`: unset means "when listening beyond loopback"; set it true
    behind a reverse proxy on the same machine. `predict_concurrency`: predictions scored at once;
    more are answered 429.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    allowed_hosts: tuple[str, ...] | None = None
    reads_need_token: bool | None = None
    predict_concurrency: int = Field(default=2, ge=1, le=64)

    @property
    def on_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def read_token_required(self) -> bool:
        return not self.on_loopback if self.reads_need_token is None else self.reads_need_token

    @property
    def host_allow_list(self) -> frozenset[str] | None:
        """The Host names answered, lower case; None: any."""
        if self.allowed_hosts is not None:
            return frozenset(h.lower() for h in self.allowed_hosts)
        return frozenset(LOOPBACK_HOSTS) if self.on_loopback else None


SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
Severity = Literal["low", "medium", "high", "critical"]


class SeverityScale(_Frozen):
    """The scores of one detector at which an alarm becomes medium, high and critical.

    Below `medium` a flagged reading is `low`. A detector the scale table does not name makes
    only low alarms: its score has no calibrated meaning to rank by (seed 000's forest).
    """

    medium: float
    high: float
    critical: float

    @model_validator(mode="after")
    def _ascending(self) -> SeverityScale:
        if not self.medium < self.high < self.critical:
            raise ValueError(
                f"severity thresholds must ascend: medium={self.medium} < high={self.high}"
                f" < critical={self.critical}"
            )
        return self


class AlarmOverride(_Frozen):
    """Some of an `AlarmRule`'s fields, for one station or one sensor; None keeps the default."""

    on_delay_readings: int | None = Field(default=None, ge=1)
    on_delay_s: float | None = Field(default=None, ge=0)
    off_delay_readings: int | None = Field(default=None, ge=1)
    off_delay_s: float | None = Field(default=None, ge=0)
    deadband_readings: int | None = Field(default=None, ge=0)
    deadband_s: float | None = Field(default=None, ge=0)
    immediate_severity: Severity | None = None
    silent_after_s: float | None = Field(default=None, gt=0)
    resume_readings: int | None = Field(default=None, ge=0)


class AlarmRule(_Frozen):
    """When a station's verdicts become an alarm, and when the alarm clears.

    On-delay: the condition (flagged readings) must hold for `on_delay_readings` readings in a
    row spanning at least `on_delay_s`, unless a reading reaches `immediate_severity` (a spike
    is one reading: no on-delay could see it). Off-delay: the alarm clears once the condition
    has been absent for `off_delay_readings` readings spanning `off_delay_s`. Deadband: after a
    clear, the same alarm does not re-activate within `deadband_readings` readings and
    `deadband_s` seconds, so a flickering condition cannot chatter. A station that sends
    nothing for `silent_after_s` (its rule for the whole-station sensor "*") is silent; its
    first `resume_readings` readings after such a gap raise no anomaly alarm (designed
    suppression: they are judged against what the station did before the gap, and the
    silence already has its alarm).
    """

    on_delay_readings: int = Field(default=20, ge=1)
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_readings: int = Field(default=30, ge=1)
    off_delay_s: float = Field(default=0.0, ge=0)
    deadband_readings: int = Field(default=0, ge=0)
    deadband_s: float = Field(default=300.0, ge=0)
    immediate_severity: Severity = "medium"
    silent_after_s: float = Field(default=10.0, gt=0)
    resume_readings: int = Field(default=15, ge=0)

    def merged(self, override: AlarmOverride | None) -> AlarmRule:
        if override is None:
            return self
        changed = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changed) if changed else self


DEFAULT_SEVERITY: dict[str, SeverityScale] = {
    # -log10 p: the detection threshold, then ten thousand and a hundred million times rarer.
    "surprise": SeverityScale(medium=4.0, high=8.0, critical=16.0),
    # z-scores: the detection threshold, twice and four times it.
    "robust_z": SeverityScale(medium=6.0, high=12.0, critical=24.0),
}


class AlarmSettings(_Frozen):
    """How verdicts become alarms (faultline.alarms), and what operators may do with them.

    `rule` is the default; `sensors` overrides it for the alarms of one sensor and `stations`
    for one station's (a station's override wins over a sensor's). A station raises no alarm
    from its first `warmup_readings` readings: its detectors are still calibrating. A silent
    station's alarm has `silent_severity`.
    """

    rule: AlarmRule = AlarmRule()
    stations: dict[str, AlarmOverride] = Field(default_factory=dict)
    sensors: dict[str, AlarmOverride] = Field(default_factory=dict)
    severity: dict[str, SeverityScale] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY))
    warmup_readings: int = Field(default=600, ge=0)
    silent_severity: Severity = "high"
    max_shelve_s: float = Field(default=7 * 86400.0, gt=0)
    max_comment_chars: int = Field(default=2000, ge=1)

    def rule_for(self, station_id: str, sensor: str) -> AlarmRule:
        """The rule of one alarm: the default, then its sensor's override, then its station's."""
        return self.rule.merged(self.sensors.get(sensor)).merged(self.stations.get(station_id))


class RetentionSettings(_Frozen):
    """How long dead letters are kept and how many of them (the newest), checked every
    `interval_s` by the process that runs the engine."""

    dead_letter_max_age_s: float = Field(default=30 * 86400.0, gt=0)
    dead_letter_max_count: int = Field(default=100_000, ge=0)
    interval_s: float = Field(default=3600.0, gt=0)


class LifecycleSettings(_Frozen):
    """How the model follows the plant: drift checks, retraining, the gate, the hot swap.

    Retraining fits on [now - gate_window_s - train_window_s, now - gate_window_s): the gate's
    window [now - gate_window_s, now) stays held out, so the gate judges a challenger on
    readings it never saw.
    """

    # Drift is checked every drift_interval_s by the process that runs the engine (0: never
    # on a schedule, only on demand); with auto_retrain a drift retrains, gates and promotes.
    drift_interval_s: float = Field(default=3600.0, ge=0)
    auto_retrain: bool = False
    drift_sample: int = Field(default=5000, ge=200)  # newest readings compared with the reference
    train_window_s: float = Field(default=7 * 86400.0, gt=0)
    gate_window_s: float = Field(default=86400.0, gt=0)
    gate_max_readings: int = Field(default=20_000, ge=100)  # readings of the window re-scored
    gate_faults: int = Field(default=200, ge=10)  # simulated faults injected into them
    # A challenger passes when it catches at least the champion's share of injected faults less
    # detection_tolerance, and raises at most the champion's false alarms times
    # (1 + false_alarm_tolerance) plus false_alarm_slack (a share of the window's readings).
    detection_tolerance: float = Field(default=0.05, ge=0, le=1)
    false_alarm_tolerance: float = Field(default=0.25, ge=0)
    false_alarm_slack: float = Field(default=0.002, ge=0, le=1)
    # How often both engines look at the champion alias; a move is picked up between batches.
    swap_interval_s: float = Field(default=5.0, gt=0)


RECEIVER_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


class ReceiverSettings(_Frozen):
    """One place notifications go (faultline.notify).

    `kind`: `alertmanager` (Prometheus Alertmanager's v2 API at `url`, e.g.
    http://127.0.0.1:9093) or `webhook` (a JSON POST to `url`, signed with HMAC-SHA256 under
    `secret`). The URL carries no credentials: a secret in a URL ends up in logs and proxies, so
    the webhook's secret is its own field (FAULTLINE_NOTIFY__RECEIVERS is a JSON list). `name`
    labels the metrics and names the receiver's cursor in the store: renaming a receiver starts
    it afresh.
    """

    name: str = Field(pattern=RECEIVER_NAME)
    kind: Literal["alertmanager", "webhook"]
    url: str
    secret: SecretStr | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _url_and_secret(self) -> ReceiverSettings:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"receiver {self.name}: url must be http(s)://host..., got {self.url!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"receiver {self.name}: the url must not carry credentials")
        if self.kind == "webhook" and (self.secret is None or not self.secret.get_secret_value()):
            raise ValueError(f"webhook receiver {self.name} needs a secret to sign with")
        if self.kind == "alertmanager" and self.secret is not None:
            raise ValueError(f"alertmanager receiver {self.name} takes no secret")
        return self


class NotifySettings(_Frozen):
    """How alarm transitions reach people (faultline.notify, docs/decisions/0016).

    Every receiver reads the store's transition log on its own cursor, every `poll_s`, `page`
    transitions at a time, re-reading `margin_s` behind it for transitions whose commit landed
    later than others recorded after them (several writers). A failing receiver is retried after
    `backoff_initial_s`, doubling up to `backoff_max_s`, with jitter; a transition recorded more
    than `max_age_s` ago is given up (counted). Alertmanager forgets an alert that is not sent
    again within its resolve_timeout (5 min by default), so the active, unshelved alarms are
    sent again every `resend_s`. The backlog gauge counts up to `backlog_cap` transitions.
    With no receivers, alarms are in the API and the dashboard only.
    """

    receivers: tuple[ReceiverSettings, ...] = ()
    poll_s: float = Field(default=1.0, gt=0)
    page: int = Field(default=200, ge=1, le=10_000)
    margin_s: float = Field(default=30.0, ge=0)
    max_age_s: float = Field(default=86400.0, gt=0)
    resend_s: float = Field(default=60.0, gt=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    backlog_cap: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> NotifySettings:
        names = [r.name for r in self.receivers]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"notify receivers named more than once: {doubled}")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"notify.backoff_initial_s={self.backoff_initial_s} is above "
                f"backoff_max_s={self.backoff_max_s}"
            )
        if self.max_age_s <= self.margin_s:
            raise ValueError(f"notify.max_age_s must exceed margin_s={self.margin_s}")
        return self


class Settings(BaseSettings):
    """Everything Faultline can be told, validated once and then frozen."""

    model_config = SettingsConfigDict(
        env_prefix="FAULTLINE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_dir: Path = Path("data")
    bus_url: str = ""  # default: a durable SQLite log in the data directory
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
    alarms: AlarmSettings = AlarmSettings()
    mqtt: MqttSettings = MqttSettings()
    retention: RetentionSettings = RetentionSettings()
    notify: NotifySettings = NotifySettings()
    lifecycle: LifecycleSettings = LifecycleSettings()

    @model_validator(mode="after")
    def _derive_urls(self) -> Settings:
        if not self.sensors:
            raise ValueError("at least one sensor must be configured")
        # An alarm's id is station|sensor|kind with "*" for the whole station, so a sensor
        # name holding either would make two alarms one.
        odd = sorted(name for name in self.sensors if not name or "|" in name or name == "*")
        if odd:
            raise ValueError(f"sensor names must be non-empty, not '*' and without '|': {odd}")
        unknown = sorted(set(self.alarms.sensors) - set(self.sensors))
        if unknown:
            raise ValueError(f"alarm overrides name unconfigured sensors {unknown}")
        # Derived defaults live inside the data directory, so one flag moves everything.
        if not self.bus_url:
            object.__setattr__(self, "bus_url", f"sqlite:///{self.data_dir / 'bus.db'}")
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{self.data_dir / 'faultline.db'}")
        if not self.mlflow_uri:
            object.__setattr__(self, "mlflow_uri", f"sqlite:///{self.data_dir / 'mlflow.db'}")
        return self

    @property
    def tokens_path(self) -> Path:
        """The API tokens' hashes (faultline.tokens), beside the default store."""
        return self.data_dir / "tokens.db"

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
