"""The shapes data takes between layers.

A batch of readings is a pandas DataFrame with the columns below, one float column per configured
sensor (NaN where a station did not carry that sensor). Times are epoch milliseconds, UTC:
`ts` is event time (stamped by the station), `received_at` processing time (when Faultline's bus
accepted the message). Keeping them as int64 columns keeps every layer vectorised and lets the
same frame cross into Spark's `mapInPandas` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import numpy as np
import pandas as pd

from faultline.alarm_schema import AlarmTransition

STATION_ID = "station_id"
TS = "ts"
SEQ = "seq"
TS_ASSIGNED = "ts_assigned"  # True when the station sent no ts and ingest time stands in
RECEIVED_AT = "received_at"
READING_COLUMNS: tuple[str, ...] = (STATION_ID, TS, SEQ, TS_ASSIGNED, RECEIVED_AT)

IS_ANOMALY = "is_anomaly"
SENSOR_MASK = "sensor_mask"  # bit i set: sensor i (in configured order) is responsible
MODEL_VERSION = "model_version"
SCORE_PREFIX = "score_"


def score_column(detector: str) -> str:
    return f"{SCORE_PREFIX}{detector}"


def empty_readings(sensors: Sequence[str]) -> pd.DataFrame:
    """A zero-row batch with the right columns and dtypes."""
    frame = pd.DataFrame(
        {
            STATION_ID: pd.Series([], dtype=object),
            TS: np.empty(0, np.int64),
            SEQ: np.empty(0, np.int64),
            TS_ASSIGNED: np.empty(0, bool),
            RECEIVED_AT: np.empty(0, np.int64),
        }
    )
    for name in sensors:
        frame[name] = np.empty(0, np.float64)
    return frame


def mask_to_sensors(mask: int, sensors: Sequence[str]) -> list[str]:
    return [name for i, name in enumerate(sensors) if mask >> i & 1]


DEAD_LETTER_PAYLOAD_BYTES = 4096
"""How much of a rejected payload is kept: enough to see what was wrong, bounded so that a flood of
large bad messages cannot fill the store."""


# Every kind of dead letter: the decoder's, then the engine's (a reading detection raised on,
# one the store refused, one of a new station beyond engine.max_stations). The metrics export
# each at 0 from the start, since Prometheus sees no increase in a counter whose first sample
# already counts the first burst.
DEAD_LETTER_KINDS = (
    "malformed",
    "field",
    "range",
    "sensor",
    "time",
    "invalid",
    "poison",
    "store",
    "station_limit",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not become a reading, with the reason.

    `payload` holds at most the first DEAD_LETTER_PAYLOAD_BYTES of what arrived; `size` is the
    length of the whole original payload, so a reader can tell a prefix from the whole message.
    """

    payload: bytes
    reason: str
    source: str  # where it came from, unique per message: "<topic>/<partition>/<offset>"
    received_at: int
    kind: str = "invalid"  # a short class of reason, for metrics: malformed, field, range, ...
    size: int = -1  # bytes of the original payload; -1: len(payload), the payload is whole

    @staticmethod
    def of(
        payload: bytes, reason: str, source: str, received_at: int, kind: str = "invalid"
    ) -> DeadLetter:
        """A dead letter keeping a bounded prefix of `payload` and its full size."""
        return DeadLetter(
            payload[:DEAD_LETTER_PAYLOAD_BYTES], reason, source, received_at, kind, len(payload)
        )

    @property
    def original_size(self) -> int:
        return len(self.payload) if self.size < 0 else self.size


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where an engine's detector state stands on one partition of its input.

    Every message of (`topic`, `partition`) below `offset` has been stored and learned, and
    `state` is the detector pipeline's state of the stations that partition carries, taken
    right after them (its `DetectorPipeline.dump` inside the engine's checkpoint state, which
    also names the log: after a log was recreated, offsets continue above the old log's, see
    faultline.engine.checkpoint). A store keeps one per (group, topic, partition): a checkpoint
    replaces the stored one only when its offset is not lower, so a replayed older batch never
    moves the state back. `written_at` is epoch ms UTC.
    """

    group: str
    topic: str
    partition: int
    offset: int
    state: bytes
    written_at: int


@dataclass(frozen=True, slots=True)
class FaultLabel:
    """Ground truth: the simulator injected `kind` into `sensor` of `station_id` over [start, end].

    `sensor` is "*" for faults that hit the whole station (dropout).
    """

    station_id: str
    sensor: str
    kind: str
    start_ts: int
    end_ts: int


@dataclass(frozen=True, slots=True)
class GlobalAnomaly:
    """A minute the daily batch job (Seasonal Hybrid ESD) found anomalous within its UTC `day`.

    `value` is the sensor's 1-minute mean, `expected` the seasonal baseline it was compared with,
    and `score` the distance between them in robust standard deviations. Keyed by
    (day, station_id, sensor, minute); `minute` is the epoch milliseconds the minute starts at.
    """

    day: date
    station_id: str
    sensor: str
    minute: int
    value: float
    expected: float
    score: float


RunStatus = Literal["succeeded", "failed"]
RUN_SUCCEEDED: RunStatus = "succeeded"
RUN_FAILED: RunStatus = "failed"


@dataclass(frozen=True, slots=True)
class GlobalAnomalyRun:
    """The record of one run of the daily global-anomaly job over its UTC `day`.

    A store keeps one per day, the latest run's, so "never ran" (no record) and "ran and found
    nothing" (a succeeded record with 0 anomalies) differ. `started_at` and `finished_at` are
    timezone-aware UTC; `series` counts the station/sensor series tested, `skipped` those left
    out by reason (e.g. {"too_short": 3}), `anomalies` those found. A failed run says why in
    `error`; its counts are as far as it got.
    """

    day: date
    started_at: datetime
    finished_at: datetime
    status: RunStatus
    series: int
    skipped: Mapping[str, int]
    anomalies: int
    error: str | None = None


@dataclass(frozen=True)
class WriteBatch:
    """Everything one engine step commits atomically.

    `readings` carries the reading columns, the sensor columns, and the verdict columns
    (IS_ANOMALY, SENSOR_MASK, MODEL_VERSION and one score column per detector).
    `checkpoints` record the detector state the batch leaves behind (see Checkpoint); a store
    commits them only together with, or after, the rest of the batch, never before it.
    With a `global_anomaly_run`, the batch's global anomalies are that run's results: a
    succeeded run replaces all of its day's anomalies with them, a failed one carries none and
    leaves the day's anomalies as they were.
    `alarm_transitions` are alarm changes (faultline.alarm_schema): the engine's, derived from
    the batch's verdicts or its silence watchdog, or an operator's, written alone by the API;
    each is keyed by `AlarmTransition.key`, so a replayed one changes nothing.
    """

    sensors: tuple[str, ...]
    detectors: tuple[str, ...]
    readings: pd.DataFrame
    processed_at: int
    dead_letters: Sequence[DeadLetter] = field(default_factory=tuple)
    faults: Sequence[FaultLabel] = field(default_factory=tuple)
    global_anomalies: Sequence[GlobalAnomaly] = field(default_factory=tuple)
    global_anomaly_run: GlobalAnomalyRun | None = None
    checkpoints: Sequence[Checkpoint] = field(default_factory=tuple)
    alarm_transitions: Sequence[AlarmTransition] = field(default_factory=tuple)
