"""The Spark Structured Streaming engine: Kafka → decode → detect → store, with state in Spark.

    Kafka source (subscribe, earliest, maxOffsetsPerTrigger)
      → mapInPandas: ReadingDecoder
      → groupBy(bucket of station_id).applyInPandasWithState: the detector pipeline over the
        bucket's rows, its stations' state restored from and saved to Spark's state store
      → foreachBatch: store.write(WriteBatch) (see `sink`)

Spark's checkpoint holds the Kafka offsets and the detector state of every micro-batch, so a job
killed at any point resumes from the last committed micro-batch: the batch in flight is computed
again from the same offsets and the same state, and the store ignores rows it already has.

The champion model is hot-swapped between micro-batches (docs/decisions/0019-spark-hot-swap.md):
a ChampionWatcher in the driver follows the registry's alias and loads a new version in a
thread of its own; at the start of each micro-batch the driver writes the version it has loaded
into the model schedule in the checkpoint directory, keyed by micro-batch id, and every worker
scoring that micro-batch looks its version up there. One micro-batch, one version, in every
bucket and in every attempt of it; the `model_version` column says which.

The driver keeps the same `faultline_*` engine metrics as the in-process engine: `foreachBatch`
counts what each micro-batch stored, and the consumer lag comes from each micro-batch's progress
(the Kafka source reports the latest offsets beside the ones the batch read up to).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from faultline.bus.kafka import KafkaBus
from faultline.clock import Clock
from faultline.config import Settings
from faultline.engine.spark.layout import (
    BUCKET,
    DEAD_LETTERS_BUCKET,
    REASON,
    STATE_SCHEMA,
    decoded_schema,
    verdict_schema,
)
from faultline.engine.spark.schedule import ScheduleKeeper, schedule_path
from faultline.engine.spark.session import spark_session
from faultline.engine.spark.sink import BatchSink, Writers, default_writers
from faultline.engine.spark.stages import (
    KAFKA_OFFSET,
    KAFKA_PARTITION,
    TOPIC,
    VALUE,
    decode_stage,
    detect_stage,
)
from faultline.engine.spark.worker_cache import fresh_pipeline, worker_model
from faultline.metrics import Metrics
from faultline.models.base import LoadedModel
from faultline.models.champion import ensure_model, model_registry
from faultline.models.watch import ChampionWatcher
from faultline.schema import RECEIVED_AT, STATION_ID
from faultline.store import Store, open_store

log = logging.getLogger(__name__)

QUERY_NAME = "faultline_engine"
# A few groups per core: enough to spread the work, few enough that Spark's fixed cost per group
# and the model's per-call cost stay small next to the detection.
DEFAULT_STATION_BUCKETS = 4


def kafka_bootstrap(bus_url: str, topic: str) -> str:
    """The brokers of a kafka:// bus URL, once `topic` exists with the configured partitions."""
    if urlsplit(bus_url).scheme != "kafka":
        raise ValueError(f"the Spark engine reads Kafka: bus URL {bus_url!r} is not kafka://")
    bus = KafkaBus.from_url(bus_url)
    try:
        bus.ensure_topic(topic)
        return bus.bootstrap
    finally:
        bus.close()


def start_query(
    spark: SparkSession,
    settings: Settings,
    *,
    checkpoint_dir: Path,
    trigger_s: float,
    max_offsets_per_trigger: int | None,
    store: Store | None,
    metrics: Metrics | None = None,
    station_buckets: int = DEFAULT_STATION_BUCKETS,
    clock: Clock | None = None,
    champion: Callable[[], LoadedModel] | None = None,
) -> StreamingQuery:
    """Start the streaming query; the driver writes into `store`, or the executors write when
    it is None, and counts each micro-batch in `metrics`. The model must already be registered
    under the configured alias.

    Each micro-batch scores with the version of `champion()` at its start (a ChampionWatcher's
    model, to follow the alias); None scores with the alias's version at the query's start.
    `checkpoint_dir` holds the model schedule too: the workers must see it.

    `station_buckets` is how many state groups the stations are hashed into; like the number of
    state partitions it is fixed for the life of a checkpoint.
    """
    if station_buckets < 1:
        raise ValueError(f"station_buckets must be >= 1, got {station_buckets}")
    if trigger_s < 0:
        raise ValueError(f"trigger_s must be >= 0, got {trigger_s}")
    if max_offsets_per_trigger is not None and max_offsets_per_trigger < 1:
        raise ValueError(f"max_offsets_per_trigger must be >= 1, got {max_offsets_per_trigger}")
    topic = settings.readings_topic
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_bootstrap(settings.bus_url, topic))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
    )
    if max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    records = reader.load().select(
        # A null value (a tombstone) is an empty message, as the Kafka bus delivers it.
        F.coalesce(F.col("value"), F.lit(b"")).alias(VALUE),
        F.col("topic").alias(TOPIC),
        F.col("partition").alias(KAFKA_PARTITION),
        F.col("offset").alias(KAFKA_OFFSET),
        # The broker's log-append time: the in-process engine's received_at too.
        F.unix_millis(F.col("timestamp")).alias(RECEIVED_AT),
    )
    if champion is None:
        model = worker_model(settings)
        champion = lambda: model  # noqa: E731 (the version at the start, for good)
    metrics = metrics or Metrics()
    schedule = schedule_path(checkpoint_dir)
    keeper = ScheduleKeeper(schedule, champion, metrics, settings.model.name)
    detectors = fresh_pipeline(settings, champion()).names
    sensors = settings.sensor_names
    decoded = records.mapInPandas(decode_stage(settings), decoded_schema(sensors))
    labels = F.array(*(F.lit(k) for k in bucket_keys(spark, station_buckets)))
    bucket = F.when(F.col(REASON) != "", F.lit(DEAD_LETTERS_BUCKET)).otherwise(
        F.element_at(labels, F.pmod(F.hash(F.col(STATION_ID)), F.lit(station_buckets)) + 1)
    )
    # One state partition per bucket (a checkpoint keeps its count, which the buckets' is).
    spark.conf.set("spark.sql.shuffle.partitions", str(station_buckets))
    verdicts = (
        decoded.withColumn(BUCKET, bucket)
        .groupBy(BUCKET)
        .applyInPandasWithState(
            detect_stage(settings, station_buckets, schedule),
            outputStructType=verdict_schema(sensors, detectors),
            stateStructType=STATE_SCHEMA,
            outputMode="append",
            # The silence watchdog: a bucket that got nothing for a while is called anyway.
            timeoutConf=GroupStateTimeout.ProcessingTimeTimeout,
        )
    )
    return (
        verdicts.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(Path(checkpoint_dir).resolve()))
        .trigger(processingTime=f"{trigger_s} seconds")
        .foreachBatch(BatchSink(settings, detectors, store, metrics, keeper, clock))
        .start()
    )


def bucket_keys(spark: SparkSession, buckets: int) -> list[int]:
    """The group key of each bucket: the smallest integers that Spark's hash partitioning sends to
    partitions 0, 1, ... of `buckets`, so every bucket gets a partition (a core) of its own.

    Keys 0..buckets-1 themselves would not do: Spark hashes group keys again to place them, and
    with 4 buckets on 2 cores that put 3 of the 4 on one core. The keys depend on the bucket count
    alone, so a restarted job finds its state under the same keys.
    """
    key = F.col("id").cast("int")
    rows = (
        spark.range(64 * buckets)
        .select(key.alias("key"), F.pmod(F.hash(key), F.lit(buckets)).alias("partition"))
        .collect()
    )
    first: dict[int, int] = {}
    for row in rows:
        first.setdefault(row["partition"], row["key"])
    return [first[p] for p in range(buckets)]


def stop_between_batches(query: StreamingQuery, timeout_s: float) -> None:
    """Stop once the micro-batch in progress (if any) is committed, or after `timeout_s`.

    With a backlog and a zero trigger interval the next micro-batch starts at once; it is then
    interrupted, which loses nothing: its offsets are not committed, so the next start runs it.
    """
    deadline = time.monotonic() + timeout_s
    before = _last_progress(query)
    while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
        if _last_progress(query) != before:
            break
        time.sleep(0.05)
    query.stop()


def _last_progress(query: StreamingQuery) -> tuple[int, str] | None:
    """Which micro-batch last reported progress, and when (a batch id repeats after a retry)."""
    progress = query.lastProgress
    return None if progress is None else (progress.batchId, progress.timestamp)


def consumer_lag(query: StreamingQuery) -> dict[str, int]:
    """Kafka messages per topic not yet read when the last micro-batch was planned: the latest
    offset of each partition less the offset the batch read up to; empty before the first."""
    progress = query.lastProgress
    lag: dict[str, int] = {}
    for source in [] if progress is None else progress.sources:
        # JSON offsets by topic and partition; null when the source reports none.
        latest, end = json.loads(source.latestOffset), json.loads(source.endOffset)
        if not isinstance(latest, dict) or not isinstance(end, dict):
            continue
        for topic, partitions in latest.items():
            read = end.get(topic, {})
            lag[topic] = sum(max(o - read.get(p, 0), 0) for p, o in partitions.items())
    return lag


def run_spark_engine(
    settings: Settings,
    *,
    stop: threading.Event,
    checkpoint_dir: Path,
    trigger_s: float = 1.0,
    max_offsets_per_trigger: int | None = None,
    spark: SparkSession | None = None,
    writers: Writers | None = None,
    station_buckets: int = DEFAULT_STATION_BUCKETS,
    drain_timeout_s: float = 60.0,
    metrics: Metrics | None = None,
) -> None:
    """Run the Spark engine until `stop` is set, then stop after the current micro-batch.

    `spark` None starts a session with `spark_session()`'s defaults and stops it on return.
    `writers` None lets the store decide where writes happen (`sink.default_writers`).
    `metrics` receives the engine metrics (the caller serves them). Raises the query's error if
    the query fails.

    The champion alias is followed every `lifecycle.swap_interval_s`: a promotion or rollback
    takes effect from the next micro-batch the driver starts once the version has loaded.
    """
    metrics = metrics or Metrics()
    registry = model_registry(settings)
    ensure_model(settings, registry)
    watcher = ChampionWatcher(registry, registry.current(), settings.lifecycle.swap_interval_s)
    watching = threading.Event()
    watch = threading.Thread(
        target=watcher.run, args=(watching,), name="spark-model-watch", daemon=True
    )
    writers = writers or default_writers(settings.store_url)
    own_session = spark is None
    session = spark or spark_session()
    store = open_store(settings.store_url) if writers == "driver" else None
    watch.start()
    try:
        query = start_query(
            session,
            settings,
            checkpoint_dir=checkpoint_dir,
            trigger_s=trigger_s,
            max_offsets_per_trigger=max_offsets_per_trigger,
            store=store,
            metrics=metrics,
            station_buckets=station_buckets,
            champion=lambda: watcher.model,
        )
        log.info("spark engine: query %s running, checkpoint %s", query.id, checkpoint_dir)
        # The query is the engine worker: up while it runs, as the in-process engine's thread.
        up = metrics.worker_up.labels(worker="engine")
        up.set(1)
        try:
            while query.isActive and not stop.wait(0.2):
                for topic, lag in consumer_lag(query).items():
                    metrics.consumer_lag.labels(topic=topic).set(lag)
        finally:
            up.set(0)
            if query.isActive:
                stop_between_batches(query, drain_timeout_s)
        # Returns at once now; raises the query's error if it failed.
        query.awaitTermination()
    finally:
        watching.set()
        watch.join()
        if store is not None:
            store.close()
        if own_session:
            session.stop()
