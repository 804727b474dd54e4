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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql.types import StructType

from faultline.codec import RawMessage, ReadingDecoder, encode_reading
from faultline.config import Settings
from faultline.detect.isolate import run_isolating
from faultline.engine.spark.layout import (
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
from faultline.engine.spark.worker_cache import fresh_pipeline
from faultline.schema import RECEIVED_AT, SEQ, STATION_ID, TS, DeadLetter

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


def detect_stage(settings: Settings, buckets: int) -> StateStage:
    """For `applyInPandasWithState` grouped by bucket: the detector pipeline over the bucket's
    rows, its stations' state restored before and saved after; dead letters pass through."""

    def run(
        key: tuple[Any, ...], frames: Iterator[pd.DataFrame], state: Any
    ) -> Iterator[pd.DataFrame]:
        pipeline = fresh_pipeline(settings)
        schema = verdict_schema(settings.sensor_names, pipeline.names)
        frame = pd.concat(list(frames), ignore_index=True)
        if key[0] == DEAD_LETTERS_BUCKET:
            yield conform(frame, schema)
            return
        frame = frame.sort_values([PARTITION, OFFSET], kind="stable", ignore_index=True)
        if state.exists:
            saved = json.loads(state.get[0])
            if saved["buckets"] != buckets:
                raise BucketCountChanged(
                    f"the checkpoint's detector state is in {saved['buckets']} buckets, this job "
                    f"has {buckets}: keep the count or start from a new checkpoint"
                )
            pipeline.restore(saved["detectors"])
        # A reading detection cannot process becomes a dead letter: on an exception the job
        # would fail, and fail again on the same input at every restart.
        isolated = run_isolating(pipeline, frame)
        state.update((json.dumps({"buckets": buckets, "detectors": pipeline.snapshot()}),))
        yield conform(isolated.verdicts, schema)
        if isolated.refused:
            letters = refused_letters(
                frame, isolated.refused, settings.readings_topic, settings.sensor_names
            )
            yield conform(dead_letter_rows(letters), schema)

    return run
