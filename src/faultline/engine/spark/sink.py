"""`foreachBatch`: each micro-batch's verdicts and dead letters into the configured store.

Two ways to write, chosen by the store (see docs/decisions/0005-spark-engine.md):

* on the driver, one `store.write` per micro-batch: for stores with a single writer (SQLite,
  whose file takes one write transaction at a time) and for the in-memory store, which only
  exists in the driver's process;
* from the executors, one `store.write` per Arrow batch of each partition: for stores built for
  concurrent writers (PostgreSQL, Cassandra), so the rows never travel to the driver.

Either way a micro-batch that Spark runs again after a failure writes the same rows again, and the
store's keys make that a no-op. Each write's `BatchTally` (from the executors, as a JSON row) is
added up in the driver into the engine metrics the in-process engine counts too.

Before the micro-batch's (lazy) DataFrame is computed, the driver records in the model schedule
that the micro-batch starts, and with which model version (`schedule.ScheduleKeeper`): the
detection that computing it runs in the workers looks that version up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from faultline.alarm_schema import transition_from_json
from faultline.clock import Clock, SystemClock
from faultline.config import Settings
from faultline.engine.spark.layout import (
    ALARM,
    KIND,
    PAYLOAD,
    REASON,
    SIZE,
    SOURCE,
    is_alarm,
    is_dead,
)
from faultline.engine.spark.schedule import ScheduleKeeper
from faultline.engine.spark.worker_cache import worker_store
from faultline.metrics import BatchTally, Metrics
from faultline.schema import (
    IS_ANOMALY,
    MODEL_VERSION,
    READING_COLUMNS,
    RECEIVED_AT,
    SENSOR_MASK,
    SEQ,
    TS,
    TS_ASSIGNED,
    DeadLetter,
    WriteBatch,
    score_column,
)
from faultline.store import Store

Writers = Literal["driver", "executors"]
# Stores whose writes must come from the driver's process.
_DRIVER_SCHEMES = frozenset({"memory", "sqlite"})


def default_writers(store_url: str) -> Writers:
    scheme = store_url.partition("://")[0].lower()
    return "driver" if scheme in _DRIVER_SCHEMES else "executors"


def write_batch(
    frame: pd.DataFrame,
    sensors: Sequence[str],
    detectors: Sequence[str],
    processed_at: int,
) -> WriteBatch:
    """The store's view of rows in the verdict layout."""
    dead, alarm = is_dead(frame), is_alarm(frame)
    letters = frame.loc[dead]
    readings = frame.loc[~dead & ~alarm]
    columns = [*READING_COLUMNS, *sensors, *(score_column(d) for d in detectors)]
    out = readings[[*columns, IS_ANOMALY, SENSOR_MASK, MODEL_VERSION]].reset_index(drop=True)
    # Arrow hands pandas its own integer and string types; the stores expect numpy's.
    for name in (TS, SEQ, RECEIVED_AT, SENSOR_MASK):
        out[name] = out[name].to_numpy(np.int64)
    for name in (TS_ASSIGNED, IS_ANOMALY):
        out[name] = out[name].to_numpy(bool)
    return WriteBatch(
        sensors=tuple(sensors),
        detectors=tuple(detectors),
        readings=out,
        processed_at=processed_at,
        dead_letters=[
            # Arrow hands an empty payload (a tombstone's) back as None.
            DeadLetter(bytes(payload or b""), reason, source, int(received), kind, int(size))
            for payload, reason, source, received, kind, size in zip(
                letters[PAYLOAD].tolist(),
                letters[REASON].tolist(),
                letters[SOURCE].tolist(),
                letters[RECEIVED_AT].tolist(),
                letters[KIND].tolist(),
                letters[SIZE].tolist(),
                strict=True,
            )
        ],
        alarm_transitions=[
            transition_from_json(json.loads(text)) for text in frame.loc[alarm, ALARM].tolist()
        ],
    )


class BatchSink:
    """The `foreachBatch` function: `schedule` records the micro-batch's model version, then
    the driver writes into `store`, or, without one, the executors write into the store
    `settings.store_url` names; either way the micro-batch is counted in `metrics` once it is
    stored."""

    def __init__(
        self,
        settings: Settings,
        detectors: Sequence[str],
        store: Store | None,
        metrics: Metrics,
        schedule: ScheduleKeeper,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._detectors = tuple(detectors)
        self._store = store
        self._metrics = metrics
        self._schedule = schedule
        self._clock = clock or SystemClock()

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        # Before anything computes the batch: its workers look the version up.
        self._schedule.begin(batch_id)
        # The DataFrame is lazy: collecting it runs the micro-batch's decode and detection too,
        # so this is the in-process engine's decode+detect+store time.
        started = time.perf_counter()
        tally = BatchTally()
        if self._store is None:
            writer = partition_writer(self._settings, self._detectors)
            for row in df.mapInPandas(writer, "tally string").collect():
                tally += BatchTally.from_json(json.loads(row["tally"]))
        else:
            frame = df.toPandas()
            if len(frame):
                batch = write_batch(
                    frame, self._settings.sensor_names, self._detectors, self._clock.now_ms()
                )
                self._store.write(batch)
                tally = BatchTally.of(batch)
        if tally.messages:
            self._metrics.record_batch(tally, time.perf_counter() - started)
        elif tally.alarm_transitions:
            self._metrics.record_alarm_transitions(tally)


def partition_writer(
    settings: Settings, detectors: Sequence[str]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """For `mapInPandas` in the executors: write each Arrow batch, yield its tally as JSON."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        store = worker_store(settings.store_url)
        clock = SystemClock()
        for frame in batches:
            if len(frame):
                batch = write_batch(frame, settings.sensor_names, detectors, clock.now_ms())
                store.write(batch)
                yield pd.DataFrame({"tally": [json.dumps(BatchTally.of(batch).to_json())]})

    return run
