"""Prometheus metrics, in a registry per process object so tests can run several side by side."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from faultline.clock import Clock, SystemClock

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Add a whole array to a histogram at once.

    prometheus_client only offers `observe(one)`; a per-value Python loop on the engine's hot
    path would cost more than the detection itself, so the bucket counts are added in bulk.
    """
    if len(values) == 0:
        return
    upper = np.array(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(upper, values, side="left"), minlength=len(upper))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(values.sum()))


class RateMeter:
    """Events per second over a sliding window, for people (Prometheus computes its own)."""

    def __init__(self, window_s: float = 10.0, clock: Clock | None = None) -> None:
        self._window_ms = window_s * 1000
        self._clock = clock or SystemClock()
        self._events: deque[tuple[int, int]] = deque()
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self._events.append((self._clock.now_ms(), count))

    def rate(self) -> float:
        now = self._clock.now_ms()
        with self._lock:
            while self._events and now - self._events[0][0] > self._window_ms:
                self._events.popleft()
            total = sum(c for _, c in self._events)
        return total / (self._window_ms / 1000)


class Metrics:
    """Every metric Faultline exports. One instance per process (or per test)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.readings = Counter(
            "faultline_readings", "Readings decoded, scored and stored", registry=r
        )
        self.anomalies = Counter(
            "faultline_anomalies", "Readings judged anomalous", ["sensor"], registry=r
        )
        self.dead_letters = Counter(
            "faultline_dead_letters",
            "Messages that could not become readings",
            ["kind"],
            registry=r,
        )
        self.batches = Counter("faultline_batches", "Engine batches committed", registry=r)
        self.dead_letters_expired = Counter(
            "faultline_dead_letters_expired",
            "Dead letters deleted by retention (too old, or beyond the count kept)",
            registry=r,
        )
        self.batch_failures = Counter(
            "faultline_batch_failures", "Engine batches that failed and were retried", registry=r
        )
        self.batch_splits = Counter(
            "faultline_batch_splits",
            "Engine batches split in two to isolate readings that detection or the store refused",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "faultline_batch_seconds",
            "Decode+detect+store time per batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "faultline_batch_size",
            "Messages per engine batch",
            buckets=(1, 10, 100, 1000, 5000, 10_000, 50_000),
            registry=r,
        )
        self.latency = Histogram(
            "faultline_ingest_to_verdict_seconds",
            "Processing latency: bus acceptance to stored verdict",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_ingested = Counter(
            "faultline_http_ingested", "Readings accepted by POST /api/readings", registry=r
        )
        self.published = Counter(
            "faultline_simulated", "Readings published by the simulator", registry=r
        )
        self.mqtt_forwarded = Counter(
            "faultline_mqtt_forwarded",
            "MQTT messages the bus accepted (only then acknowledged to the broker)",
            registry=r,
        )
        self.mqtt_truncated = Counter(
            "faultline_mqtt_truncated",
            "MQTT payloads over the bridge's size limit, forwarded cut to it",
            registry=r,
        )
        self.mqtt_bus_failures = Counter(
            "faultline_mqtt_bus_failures",
            "MQTT bridge batches the bus refused, then retried",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "faultline_mqtt_connected",
            "1 while the MQTT bridge is connected to its broker and subscribed",
            registry=r,
        )
        self.model_info = Gauge(
            "faultline_model_info", "The model in use (value 1)", ["name", "version"], registry=r
        )
        self.worker_up = Gauge(
            "faultline_worker_up",
            "1 while a worker thread (engine, simulator, ...) runs, 0 while it waits to restart",
            ["worker"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "faultline_worker_restarts",
            "Worker threads restarted after they crashed",
            ["worker"],
            registry=r,
        )
        self.ingest_rate = RateMeter(clock=clock)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
