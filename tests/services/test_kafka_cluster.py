"""Seed 000's three brokers, for real: one dies mid-stream and no acknowledged reading is lost.

Needs the cluster `svc.py start kafka-cluster` runs (replication 3, min.insync.replicas 2), found
through FAULTLINE_TEST_KAFKA_CLUSTER. The test SIGKILLs the node leading partition 0, keeps
publishing and consuming through the failover, and restarts the node afterwards.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from faultline.bus import BusError, Record
from faultline.bus.kafka import KafkaBus
from tests.services.endpoints import require_endpoint, services_dir, svc

STATIONS = 25


def _pid_of(node_id: int) -> int:
    return int((services_dir() / "kafka-cluster" / f"node-{node_id}" / "pid").read_text())


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.slow
def test_killing_a_broker_mid_stream_loses_nothing() -> None:
    bootstrap = require_endpoint("FAULTLINE_TEST_KAFKA_CLUSTER")
    topic = f"cluster-{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(bootstrap, partitions=6, replication=3, client_id="cluster-test")
    consumer = bus.consumer(topic, "engine")

    published: list[tuple[str, int]] = []  # what publish returned for: the bus owes us these
    published_at: list[float] = []
    arrivals: list[tuple[str, int]] = []
    errors: list[str] = []
    producing, consuming = threading.Event(), threading.Event()
    producing.set()
    consuming.set()

    def produce() -> None:
        seq = 0
        while producing.is_set():
            batch = [(f"station-{s:02d}", seq) for s in range(STATIONS)]
            try:
                bus.publish(topic, [Record(f"{k}:{n}".encode(), key=k.encode()) for k, n in batch])
            except BusError as exc:  # not acknowledged: send the same readings again
                errors.append(f"publish: {exc}")
                continue
            published.extend(batch)
            published_at.append(time.monotonic())
            seq += 1
            time.sleep(0.01)

    def consume() -> None:
        while consuming.is_set():
            batch = consumer.consume(1000, timeout_s=0.5)
            for message in batch:
                key, seq = message.value.decode().split(":")
                arrivals.append((key, int(seq)))
            try:
                consumer.ack(batch)
            except BusError as exc:  # the group moved on: the batch will come again
                errors.append(f"ack: {exc}")

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    victim_pid = None
    try:
        time.sleep(3)
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        victim_pid = _pid_of(meta.topics[topic].partitions[0].leader)
        before_kill = len(published)
        os.kill(victim_pid, signal.SIGKILL)
        time.sleep(10)  # publishing and consuming go on with two of three replicas
        assert not _alive(victim_pid)
        published_after_kill = len(published) - before_kill
        producing.clear()
        threads[0].join(30)
        deadline = time.monotonic() + 60
        while not set(published) <= set(arrivals) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        producing.clear()
        consuming.clear()
        for thread in threads:
            thread.join(30)
        consumer.close()
        bus.close()
        if victim_pid is not None:
            svc("start", "kafka-cluster")  # the cluster is whole again for the next test

    stall = max(b - a for a, b in itertools.pairwise(published_at))
    print(f"longest publish gap {stall:.1f} s; {len(errors)} errors; {len(arrivals)} arrivals")
    assert published_after_kill > 10 * STATIONS, f"publishing stalled: {errors[-3:]}"
    lost = set(published) - set(arrivals)
    assert not lost, f"{len(lost)} acknowledged readings lost, e.g. {sorted(lost)[:5]}"
    # Redelivery may repeat readings, but a station's new reading never overtakes an older one.
    newest: dict[str, int] = {}
    for key, seq in arrivals:
        if seq > newest.get(key, -1):
            assert seq == newest.get(key, -1) + 1, f"{key} skipped from {newest.get(key)} to {seq}"
            newest[key] = seq
