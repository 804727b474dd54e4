"""The API's response shapes, as pydantic models so /docs documents them.

Readings carry one field per configured sensor (seed 000's flat form), so their model is built
from the settings when the app is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from faultline.api.params import run_id_of
from faultline.clock import iso_ms
from faultline.store import ReadingRow


class ApiModel(BaseModel):
    """Base of every response: how floats JSON cannot hold are written."""

    # A detector may score ±inf; JSON has no such number, and null says "no usable score".
    model_config = ConfigDict(ser_json_inf_nan="null")


_READING_FIELDS: dict[str, Any] = {
    "station_id": (str, Field(description="The station that sent the reading")),
    "record_time": (str, Field(description="Event time, ISO 8601 UTC with milliseconds")),
}
_VERDICT_FIELDS: dict[str, Any] = {
    "is_outlier": (bool, Field(description="The reading was judged anomalous")),
    "mlflow_id": (str, Field(description="MLflow run id of the model behind the verdict")),
    "ts_ms": (int, Field(description="Event time, epoch milliseconds UTC")),
    "seq": (int, Field(description="The station's sequence number")),
    "ts_assigned": (bool, Field(description="The station sent no time; ingest time stands in")),
    "received_at": (str, Field(description="When the bus accepted it, ISO 8601 UTC")),
    "sensors": (list[str], Field(description="The sensors responsible for the anomaly")),
    "scores": (
        dict[str, float | None],
        Field(description="Each detector's score (higher = more anomalous; null = no verdict)"),
    ),
    "model_version": (str, Field(description="Versions of the detectors that scored it")),
}


class ReadingShape:
    """Builds the reading model for the configured sensors and fills it from store rows."""

    def __init__(self, sensors: Sequence[str]) -> None:
        reserved = sorted(set(sensors) & (_READING_FIELDS.keys() | _VERDICT_FIELDS.keys()))
        if reserved:
            raise ValueError(f"sensor names {reserved} clash with fields of the reading API")
        self.sensors = tuple(sensors)
        sensor_fields: dict[str, Any] = {
            name: (float | None, Field(description=f"{name}; null when the station lacks it"))
            for name in self.sensors
        }
        self.model: type[BaseModel] = create_model(
            "Reading", __base__=ApiModel, **_READING_FIELDS, **sensor_fields, **_VERDICT_FIELDS
        )

    def row(self, row: ReadingRow) -> dict[str, Any]:
        out: dict[str, Any] = {"station_id": row.station_id, "record_time": iso_ms(row.ts)}
        for name in self.sensors:
            out[name] = row.values.get(name)
        out.update(
            is_outlier=row.is_anomaly,
            mlflow_id=run_id_of(row.model_version),
            ts_ms=row.ts,
            seq=row.seq,
            ts_assigned=row.ts_assigned,
            received_at=iso_ms(row.received_at),
            sensors=row.sensors,
            scores=row.scores,
            model_version=row.model_version,
        )
        return out


class OutliersCount(ApiModel):
    time_range: str
    outliers_count: int
    from_: str = Field(alias="from", description="Start of the range (included), ISO 8601 UTC")
    to: str = Field(description="End of the range (excluded), ISO 8601 UTC")


class Prediction(ApiModel):
    is_anomaly: bool
    features: dict[str, float] = Field(description="The request's sensor values, echoed")
    model_version: str = Field(description="MLflow run id of the model that judged")
    score: float = Field(description="Anomaly score: higher = more anomalous")
    threshold: float | None = Field(description="Scores above this are anomalies, when known")
    model_name: str
    registry_version: str = Field(description="Version number in the model registry")


class SensorDriftOut(ApiModel):
    ks_statistic: float
    p_value: float
    psi: float = Field(description="Population stability index against the training deciles")
    drifted: bool
    shift: float = Field(
        description="Wasserstein distance in reference standard deviations (1.0: moved by one)"
    )


class ScoreDriftOut(ApiModel):
    anomaly_rate: float = Field(description="Share of the recent readings the model flags")
    expected_rate: float = Field(description="The share it was fitted to flag (contamination)")
    p_value: float = Field(description="One-sided binomial test: more flags than chance explains")
    drifted: bool
    rows: int


class ModelVersionInfo(ApiModel):
    name: str
    version: str = Field(description="Version number in the model registry")
    run_id: str = Field(description="MLflow run id (seed 000's model_version)")
    trained_at: str
    trained_at_ms: int
    params: dict[str, str]


class GateFiguresOut(ApiModel):
    readings: int = Field(description="Readings of the recent window re-scored")
    false_alarms: int = Field(description="Of those, flagged outside labelled faults")
    false_alarm_rate: float
    alarms: int = Field(description="Episodes of flagged readings on the recent window")
    faults: int = Field(description="Simulated faults injected into held-out recent readings")
    faults_caught: int = Field(description="Injected faults with at least one reading flagged")
    detection_rate: float = Field(description="Share of the injected faults' readings flagged")


class GateOut(ApiModel):
    challenger_version: str
    champion_version: str | None = Field(description="null: there was no champion to compare")
    passed: bool
    reason: str = Field(description="Why it passed or why not, in one sentence")
    challenger: GateFiguresOut
    champion: GateFiguresOut | None
    window_from: str
    window_to: str
    window_start_ms: int
    window_end_ms: int
    gated_at: str
    gated_at_ms: int


class ModelVersionOut(ModelVersionInfo):
    aliases: list[str]
    compiled: str = Field(description='"logged" when a compiled form scores it, else why not')
    gate: GateOut | None = Field(description="The version's latest gate, if it had one")


class ChampionChangeOut(ApiModel):
    operation: Literal["promote", "rollback"]
    from_version: str | None
    to_version: str
    at: str
    at_ms: int
    actor: str = Field(description="Token name, cli or auto")
    reason: str


class DriftStatus(ApiModel):
    drift_detected: bool
    message: str
    checked_at: str
    checked_at_ms: int
    model_version: str = Field(description="Registry version of the champion checked against")
    reference_size: int
    recent_size: int
    sensors: dict[str, SensorDriftOut]
    score: ScoreDriftOut | None = Field(description="The model's anomaly rate, when it was judged")


class DriftCheck(ApiModel):
    msg: str
    drift_detected: bool
    retrained: bool = Field(description="A challenger was trained by this call")
    model_version: str = Field(description="MLflow run id serving after the call")
    reference_size: int
    recent_size: int
    sensors: dict[str, SensorDriftOut]
    score: ScoreDriftOut | None = Field(description="The model's anomaly rate, when judged")
    promoted: bool = Field(description="The challenger passed the gate and now serves")
    challenger: ModelVersionInfo | None = Field(description="The challenger trained, if any")
    gate: GateOut | None = Field(description="The challenger's gate, if it was gated")
    checked_at: str | None = Field(description="When the drift was checked (null: not recorded)")


JobState = Literal["queued", "running", "done", "failed"]


class ModelJob(ApiModel):
    id: str
    kind: Literal["retrain"]
    state: JobState
    params: dict[str, str | int | None] = Field(description="What the job was asked to do")
    created_at: str
    started_at: str | None
    finished_at: str | None
    actor: str = Field(description="The token that started it")
    result: ModelVersionInfo | None = Field(description="done: the challenger registered")
    gate: GateOut | None = Field(description="done: the challenger's gate beside the champion")
    error: str | None = Field(description="failed: why")


class ModelsOut(ApiModel):
    available: bool = Field(description="This process has a model lifecycle (a registry)")
    detail: str = Field(description="Why not, when not available")
    alias: str = Field(description="The alias that serves")
    challenger_alias: str
    champion: str | None = Field(description="The serving version, if any")
    challengers: list[str] = Field(description="Versions under the challenger alias")
    versions: list[ModelVersionOut] = Field(description="Newest first")
    history: list[ChampionChangeOut] = Field(description="Promotions and rollbacks, newest first")
    drift: DriftStatus | None = Field(description="The latest recorded drift check")
    job: ModelJob | None = Field(description="The running job, else the latest of this process")
    caller_role: str | None = Field(
        description="The role of the token sent with this request (the dashboard's buttons)"
    )


class Component(ApiModel):
    status: Literal["ok", "error"]
    detail: str


class Health(ApiModel):
    status: Literal["ok", "error"]
    live: bool = Field(description="The API answers (always true when you can read this)")
    ready: bool = Field(description="Every component below is ok")
    components: dict[str, Component]


StationStatus = Literal["ok", "anomalous", "silent", "warming_up"]


class Station(ApiModel):
    station_id: str
    status: StationStatus
    last_record_time: str
    last_ts_ms: int
    last_received_at: str
    silent_for_s: float = Field(description="Seconds since its last reading reached the bus")
    last_values: dict[str, float]
    last_is_outlier: bool
    readings: int
    anomalies: int


class StationsOut(ApiModel):
    now: str
    silent_after_s: float = Field(description="No reading for this long makes a station silent")
    stations: list[Station]


class DeadLetterOut(ApiModel):
    id: int
    received_at: str
    source: str
    reason: str
    payload: str = Field(description="The raw message as text (undecodable bytes replaced)")


class Accepted(ApiModel):
    accepted: int = Field(description="Readings handed to the bus for the engine to validate")


class SensorInfo(ApiModel):
    name: str
    unit: str
    min: float = Field(description="Lowest physically possible value")
    max: float = Field(description="Highest physically possible value")


class Stats(ApiModel):
    now: str
    now_ms: int
    ingest_rate: float = Field(description="Readings per second over the last 10 s")
    model_name: str | None
    model_version: str | None = Field(description="MLflow run id of the serving model")
    registry_version: str | None
    stations: int
    readings: int
    anomalies: int
    dead_letters: int
    sensors: list[SensorInfo] = Field(description="The configured sensors, in column order")
