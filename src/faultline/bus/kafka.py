"""The Kafka bus: topics on a Kafka cluster, through confluent-kafka (librdkafka).

Delivery keeps the bus contract: the producer is idempotent with `acks=all`, so a record
`publish` returned for survives the loss of a broker (with replication >= min.insync.replicas + 1);
consumers never auto-commit, so a group only moves past what a consumer `ack`ed.

All or nothing holds here for what the producer can judge before sending (a record over
`message.max.bytes` is refused before any record is produced); a publish that times out waiting
for the brokers may have been partly delivered, and its retry can then duplicate records, which
the store's (station, ts, seq) key absorbs for readings that carry their own `seq`. Making that
atomic too needs Kafka transactions (decision 9). Idempotency keys are remembered by this
process only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from confluent_kafka import Consumer as _KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from faultline.bus.base import (
    Bus,
    BusClosed,
    BusError,
    Consumer,
    Message,
    Published,
    PublishTooLarge,
    Record,
    record_bytes,
)
from faultline.bus.idempotency import KeyTable
from faultline.bus.options import url_options
from faultline.clock import SystemClock

log = logging.getLogger(__name__)

_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "partitions": int,
    "replication": int,
    "client_id": str,
}


class KafkaBus(Bus):
    """A `Bus` on the Kafka cluster at `bootstrap` ("host:port,host:port").

    Topics are created on first use with `partitions` and `replication`; their timestamps are the
    broker's log-append time, so `Message.timestamp_ms` is when the bus accepted the record.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        partitions: int = 6,
        replication: int = 1,
        client_id: str = "faultline",
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        topic_ready_timeout_s: float = 30.0,
    ) -> None:
        if partitions < 1 or replication < 1:
            raise ValueError("partitions and replication must be at least 1")
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.replication = replication
        self.client_id = client_id
        self._consumer_config = dict(consumer_config or {})
        self._topic_ready_timeout_s = topic_ready_timeout_s
        common: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
        }
        self._admin = AdminClient(common)
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,
                "acks": "all",
                # The Java client's partitioner: a station lands in the same partition whether a
                # Python or a JVM producer (Spark, Kafka Connect) wrote it.
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                **(producer_config or {}),
            }
        )
        # librdkafka's own default; a record above it is refused by the producer.
        self._max_record_bytes = int((producer_config or {}).get("message.max.bytes", 1_000_000))
        # Kept in this process only: a retry reaching another producer process or a restarted
        # one publishes again (documented in decision 9).
        self._keys = KeyTable(SystemClock())
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> KafkaBus:
        """`kafka://host:port[,host:port...][?partitions=N&replication=N&client_id=NAME]`."""
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ValueError(f"not a Kafka bus URL: {url!r} (want kafka://host:port,...)")
        return cls(parts.netloc, **url_options(url, parts.query, _URL_OPTIONS))

    def ensure_topic(self, topic: str) -> None:
        """Create `topic` unless it exists, and wait until every partition has a leader."""
        with self._lock:
            if topic in self._known_topics:
                return
            new = NewTopic(
                topic,
                num_partitions=self.partitions,
                replication_factor=self.replication,
                config={"message.timestamp.type": "LogAppendTime"},
            )
            future = self._admin.create_topics([new], request_timeout=self._topic_ready_timeout_s)
            try:
                future[topic].result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BusError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from exc
            self._await_leaders(topic)
            self._known_topics.add(topic)

    def _await_leaders(self, topic: str) -> None:
        deadline = time.monotonic() + self._topic_ready_timeout_s
        while True:
            try:
                meta = self._admin.list_topics(topic, timeout=5).topics[topic]
                if meta.error is None and all(p.leader >= 0 for p in meta.partitions.values()):
                    return
                problem = str(meta.error or "partitions without a leader")
            except KafkaException as exc:
                problem = exc.args[0].str()
            if time.monotonic() > deadline:
                raise BusError(f"topic {topic!r} not ready: {problem}")
            time.sleep(0.1)

    def log_id(self, topic: str) -> str:
        """The topic's id (a UUID the brokers give each topic when it is created, since Kafka
        2.8): deleting and recreating the topic gives a new one, as offsets start again."""
        self.ensure_topic(topic)
        future = self._admin.describe_topics(
            TopicCollection([topic]), request_timeout=self._topic_ready_timeout_s
        )[topic]
        try:
            described = future.result()
        except KafkaException as exc:
            raise BusError(f"cannot describe topic {topic!r}: {exc.args[0].str()}") from exc
        return str(described.topic_id)

    def publish(
        self,
        topic: str,
        records: Sequence[Record],
        timeout_s: float = 10.0,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        if self._closed:
            raise BusClosed("bus is closed")
        batch = list(records)
        # Refused before anything is produced, so such a publish appends nothing.
        for record in batch:
            if record_bytes(record) > self._max_record_bytes:
                raise PublishTooLarge(
                    f"a record of {record_bytes(record)} bytes for {topic!r} is over the "
                    f"producer's message.max.bytes ({self._max_record_bytes}); nothing published"
                )
        if idempotency_key is None:
            return Published(self._produce(topic, batch, timeout_s))
        return self._keys.publish(
            topic, idempotency_key, batch, lambda: self._produce(topic, batch, timeout_s)
        )

    def _produce(self, topic: str, records: list[Record], timeout_s: float) -> int:
        if not records:
            return 0
        self.ensure_topic(topic)
        deadline = time.monotonic() + timeout_s
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(err.str())

        for record in records:
            while True:
                try:
                    self._producer.produce(
                        topic, value=record.value, key=record.key, on_delivery=delivered
                    )
                    break
                except BufferError:
                    # librdkafka's local queue is full: wait for the brokers to drain it.
                    if time.monotonic() > deadline:
                        raise BusError(
                            f"producer queue full for {timeout_s:g} s publishing to {topic!r}"
                        ) from None
                    self._producer.poll(0.05)
                except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                    raise BusError(
                        f"record refused for {topic!r} (those before it may be published): "
                        f"{exc.args[0].str()}"
                    ) from exc
        undelivered = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if undelivered:
            raise BusError(
                f"{undelivered} records to {topic!r} not acknowledged by the brokers "
                f"within {timeout_s:g} s"
            )
        if failures:
            raise BusError(
                f"{len(failures)} of {len(records)} records to {topic!r} failed: {failures[0]}"
            )
        return len(records)

    def consumer(self, topic: str, group: str) -> Consumer:
        if self._closed:
            raise BusClosed("bus is closed")
        self.ensure_topic(topic)
        return KafkaConsumer(self, topic, group, self._consumer_config)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._producer.flush(10.0)


class KafkaConsumer(Consumer):
    """One member of a Kafka consumer group; offsets are committed by `ack` alone."""

    def __init__(
        self, bus: KafkaBus, topic: str, group: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        self._topic = topic
        self._consumer = _KafkaConsumer(
            {
                "bootstrap.servers": bus.bootstrap,
                "client.id": bus.client_id,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **(extra or {}),
            }
        )
        self._consumer.subscribe([topic])
        self._committed: dict[int, int] = {}
        self._closed = False

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        if self._closed:
            raise BusError("consumer is closed")
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        raw = [first]
        if max_messages > 1:
            # Whatever is already fetched, without waiting for more.
            raw += self._consumer.consume(num_messages=max_messages - 1, timeout=0)
        batch = []
        for msg in raw:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise BusError(f"consumer of {self._topic!r} failed: {err.str()}")
                # Transient (a broker restarting, a partition moving): librdkafka retries.
                log.warning("consumer of %r: %s", self._topic, err.str())
                continue
            _kind, timestamp_ms = msg.timestamp()
            batch.append(
                Message(
                    topic=self._topic,
                    # A message that carries no error always has both.
                    partition=cast(int, msg.partition()),
                    offset=cast(int, msg.offset()),
                    timestamp_ms=timestamp_ms,
                    value=msg.value() or b"",
                    key=msg.key(),
                )
            )
        return batch

    def ack(self, messages: Sequence[Message]) -> None:
        if self._closed:
            raise BusError("consumer is closed")
        upto: dict[int, int] = {}
        for message in messages:
            upto[message.partition] = max(upto.get(message.partition, 0), message.offset + 1)
        offsets = [
            TopicPartition(self._topic, partition, offset)
            for partition, offset in sorted(upto.items())
            if offset > self._committed.get(partition, -1)
        ]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition away: its new owner will get the
            # messages again, which at-least-once allows.
            raise BusError(f"commit on {self._topic!r} failed: {exc.args[0].str()}") from exc
        for tp in offsets:
            self._committed[tp.partition] = tp.offset

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()
