"""The functions Spark runs in its Python workers: decode per partition, then the detectors per
bucket of stations with their state in Spark's state store.

Stations are grouped into a fixed number of buckets rather than one group per station: the
detectors vectorise across the stations of a frame (a round holds one reading of each station), and
every group costs Spark a fixed overhead, so one group per station would make the per-group cost
the whole cost. A bucket's state is the detector pipeline's snapshot of the bucket's stations.

Within a bucket, rows are taken in bus order (partition, offset), the order the in-process engine
consumes them in; since a station's readings share a partition, each station sees its readings
in the same order in both engines, and the detectors' verdicts are the same. A restarted or replayed
micro-batch starts from exactly the state the previous one committed.

The alarm state travels in the same bucket state (faultline.engine.alarming, as the in-process
engine's checkpoints carry it): the tracker turns the bucket's verdicts into the same anomaly
transitions as the in-process engine, and the silence watchdog runs on every call of a bucket,
including the processing-time timeout Spark calls it with when the bucket got nothing for a
while (timer-driven: no message has to arrive). A bucket with data judges silence against the
newest bus acceptance time it got, so a job working through a backlog raises no false silence;
a timed-out one against processing time.

The model a bucket scores with is the one the driver's model schedule names for the micro-batch
(`schedule`; the id comes from the task's local properties), so a promotion or rollback takes
effect for all buckets in the same micro-batch, and a replayed micro-batch scores as before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql.types import StructType

from faultline.alarm_schema import AlarmTransition, transition_to_json
from faultline.codec import RawMessage, ReadingDecoder, encode_reading
from faultline.config import Settings
from faultline.detect.isolate import run_isolating
from faultline.engine.alarming import EngineAlarms
from faultline.engine.spark.layout import (
    ALARM,
    DEAD_LETTERS_BUCKET,
    KIND,
    OFFSET,
    PARTITION,
    PAYLOAD,
    REASON,
    SIZE,
    SOURCE,
    conform,
    decoded_schema,
    verdict_schema,
)
from faultline.engine.spark.worker_cache import batch_model, fresh_pipeline
from faultline.schema import RECEIVED_AT, SEQ, STATION_ID, TS, DeadLetter

# The local property Spark's micro-batch execution sets on every job of a micro-batch
# (MicroBatchExecution.BATCH_ID_KEY); Spark passes local properties to each task, Python
# workers included.
BATCH_ID_PROPERTY = "streaming.sql.batchId"

# The Kafka source's columns, as the job selects them.
VALUE, TOPIC, KAFKA_PARTITION, KAFKA_OFFSET = "value", "topic", "partition", "offset"

PandasStage = Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]
StateStage = Callable[[tuple[Any, ...], Iterator[pd.DataFrame], Any], Iterator[pd.DataFrame]]


class BucketCountChanged(RuntimeError):
    """The checkpoint's state was bucketed differently: its stations would lose their state."""


def decode_stage(settings: Settings) -> PandasStage:
    """For `mapInPandas`: Kafka records to readings and dead letters."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        decoder = ReadingDecoder(settings.sensors, settings.ingest)
        schema = decoded_schema(settings.sensor_names)
        for raw in batches:
            yield decode(raw, decoder, schema)

    return run


def decode(raw: pd.DataFrame, decoder: ReadingDecoder, schema: StructType) -> pd.DataFrame:
    messages = [
        RawMessage(bytes(value), f"{topic}/{partition}/{offset}", received, offset)
        for value, topic, partition, offset, received in zip(
            raw[VALUE].tolist(),
            raw[TOPIC].tolist(),
            raw[KAFKA_PARTITION].tolist(),
            raw[KAFKA_OFFSET].tolist(),
            raw[RECEIVED_AT].tolist(),
            strict=True,
        )
    ]
    decoded = decoder.decode(messages)
    readings = decoded.readings
    readings[PARTITION] = raw[KAFKA_PARTITION].to_numpy(np.int32)[decoded.rows]
    readings[OFFSET] = raw[KAFKA_OFFSET].to_numpy(np.int64)[decoded.rows]
    # Each part filled out on its own: after a concat, a reading's dead-letter columns would be
    # NaN rather than empty.
    return pd.concat(
        [conform(readings, schema), conform(dead_letter_rows(decoded.dead_letters), schema)],
        ignore_index=True,
    )


def dead_letter_rows(letters: Sequence[DeadLetter]) -> pd.DataFrame:
    """Dead letters in the stages' layout."""
    return pd.DataFrame(
        {
            RECEIVED_AT: np.array([d.received_at for d in letters], np.int64),
            PAYLOAD: np.array([d.payload for d in letters], dtype=object),
            REASON: np.array([d.reason for d in letters], dtype=object),
            SOURCE: np.array([d.source for d in letters], dtype=object),
            KIND: np.array([d.kind for d in letters], dtype=object),
            SIZE: np.array([d.original_size for d in letters], np.int64),
        }
    )


def refused_letters(
    frame: pd.DataFrame, refused: list[tuple[int, str]], topic: str, sensors: Sequence[str]
) -> list[DeadLetter]:
    """Dead letters for readings detection refused (see `run_isolating`). The stage no longer
    has the message's bytes, so the payload is the reading as it was decoded."""
    letters = []
    for position, reason in refused:
        row = frame.iloc[position]
        values = {s: float(row[s]) for s in sensors if not np.isnan(row[s])}
        payload = encode_reading(str(row[STATION_ID]), int(row[TS]), int(row[SEQ]), values)
        source = f"{topic}/{int(row[PARTITION])}/{int(row[OFFSET])}"
        letters.append(DeadLetter.of(payload, reason, source, int(row[RECEIVED_AT]), "poison"))
    return letters


def alarm_rows(transitions: Sequence[AlarmTransition]) -> pd.DataFrame:
    """Alarm transitions in the stages' layout."""
    return pd.DataFrame(
        {ALARM: np.array([json.dumps(transition_to_json(t)) for t in transitions], dtype=object)}
    )


def current_batch_id() -> int | None:
    """The id of the micro-batch the running task belongs to; None outside a streaming query."""
    from pyspark import TaskContext

    context = TaskContext.get()
    value = None if context is None else context.getLocalProperty(BATCH_ID_PROPERTY)
    return None if value is None else int(value)


def detect_stage(settings: Settings, buckets: int, schedule: Path | None = None) -> StateStage:
    """For `applyInPandasWithState` grouped by bucket: the detector pipeline and the alarm
    tracker over the bucket's rows, its stations' state restored before and saved after, the
    silence watchdog on every call (timeouts included); dead letters pass through.

    The pipeline scores with the model the driver's `schedule` names for the micro-batch (the
    alias's version without one), so every bucket of a micro-batch, and every attempt of it,
    scores with the same version. The streaming detectors' state comes from Spark's state as
    ever; the model's detector has none, so another version is only another detector.
    """
    timeout_ms = max(1, round(settings.alarms.rule.silent_after_s * 1000))

    def run(
        key: tuple[Any, ...], frames: Iterator[pd.DataFrame], state: Any
    ) -> Iterator[pd.DataFrame]:
        pipeline = fresh_pipeline(settings, batch_model(settings, schedule, current_batch_id()))
        schema = verdict_schema(settings.sensor_names, pipeline.names)
        # A timed-out call may come with an empty frame rather than none: only rows count.
        parts = [f for f in frames if len(f)]
        if key[0] == DEAD_LETTERS_BUCKET:
            if parts:
                yield conform(pd.concat(parts, ignore_index=True), schema)
            return
        alarms = EngineAlarms(settings.alarms, settings.sensor_names, settings.engine.max_stations)
        seen: dict[str, int] = {}
        if state.exists:
            saved = json.loads(state.get[0])
            if saved["buckets"] != buckets:
                raise BucketCountChanged(
                    f"the checkpoint's detector state is in {saved['buckets']} buckets, this job "
                    f"has {buckets}: keep the count or start from a new checkpoint"
                )
            pipeline.restore(saved["detectors"])
            if "alarms" in saved:  # absent from the state of a job older than alarms
                alarms.load(base64.b64decode(saved["alarms"]))
                seen = saved["seen"]
        out: list[pd.DataFrame] = []
        if parts:
            frame = pd.concat(parts, ignore_index=True)
            frame = frame.sort_values([PARTITION, OFFSET], kind="stable", ignore_index=True)
            # A reading detection cannot process becomes a dead letter: on an exception the
            # job would fail, and fail again on the same input at every restart.
            isolated = run_isolating(pipeline, frame)
            verdicts = isolated.verdicts
            transitions = alarms.step(verdicts)
            newest = verdicts.groupby(STATION_ID, sort=False)[RECEIVED_AT].max()
            for station, at in newest.items():
                seen[str(station)] = max(int(at), seen.get(str(station), int(at)))
            now = max(seen.values(), default=0)
            out.append(conform(verdicts, schema))
            if isolated.refused:
                letters = refused_letters(
                    frame, isolated.refused, settings.readings_topic, settings.sensor_names
                )
                out.append(conform(dead_letter_rows(letters), schema))
        else:
            transitions = []
            now = int(state.getCurrentProcessingTimeMs())
        transitions += alarms.watch(seen, now)
        state.update(
            (
                json.dumps(
                    {
                        "buckets": buckets,
                        "detectors": pipeline.snapshot(),
                        "alarms": base64.b64encode(alarms.dump(seen)).decode(),
                        "seen": seen,
                    }
                ),
            )
        )
        state.setTimeoutDuration(timeout_ms)
        yield from out
        if transitions:
            yield conform(alarm_rows(transitions), schema)

    return run
