"""Prometheus metrics, in a registry per process object so tests can run several side by side."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from faultline.alarm_schema import AlarmKind, EngineAction
from faultline.clock import Clock, SystemClock
from faultline.schema import (
    DEAD_LETTER_KINDS,
    IS_ANOMALY,
    RECEIVED_AT,
    SENSOR_MASK,
    WriteBatch,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The histogram's upper bounds, +Inf last, as prometheus_client keeps them.
_LATENCY_BOUNDS = np.array([*_LATENCY_BUCKETS, float("inf")])


def bucket_counts(upper_bounds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many of `values` fall in each (non-cumulative) bucket of a histogram."""
    return np.bincount(
        np.searchsorted(upper_bounds, values, side="left"), minlength=len(upper_bounds)
    )


def _add_counts(histogram: Histogram, counts: Sequence[int], total: float) -> None:
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(total)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Add a whole array to a histogram at once.

    prometheus_client only offers `observe(one)`; a per-value Python loop on the engine's hot
    path would cost more than the detection itself, so the bucket counts are added in bulk.
    """
    if len(values) == 0:
        return
    counts = bucket_counts(np.array(histogram._upper_bounds), values)
    _add_counts(histogram, counts.tolist(), float(values.sum()))


@dataclass
class BatchTally:
    """What one stored batch adds to the engine metrics, small enough to travel.

    The Spark engine's executors write batches the driver never sees: each sends back its
    tally, and the driver adds them up into the same metrics the in-process engine counts.
    """

    messages: int = 0
    readings: int = 0
    anomalies: Tally[str] = field(default_factory=Tally)  # by sensor; "none": unattributed
    dead_letters: Tally[str] = field(default_factory=Tally)  # by kind
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(_LATENCY_BOUNDS))
    latency_sum: float = 0.0
    alarm_transitions: Tally[str] = field(default_factory=Tally)  # by "kind/action"

    @classmethod
    def of(cls, batch: WriteBatch) -> BatchTally:
        """A batch's tally; every message became a reading or a dead letter."""
        readings = batch.readings
        tally = cls(
            messages=len(readings) + len(batch.dead_letters),
            readings=len(readings),
            dead_letters=Tally(letter.kind for letter in batch.dead_letters),
            alarm_transitions=Tally(f"{t.alarm.kind}/{t.action}" for t in batch.alarm_transitions),
        )
        if len(readings):
            latency = np.maximum((batch.processed_at - readings[RECEIVED_AT].to_numpy()) / 1000, 0)
            tally.latency_counts = bucket_counts(_LATENCY_BOUNDS, latency).tolist()
            tally.latency_sum = float(latency.sum())
            masks = readings[SENSOR_MASK].to_numpy()[readings[IS_ANOMALY].to_numpy()]
            unattributed = int(np.count_nonzero(masks == 0))
            if unattributed:
                tally.anomalies["none"] = unattributed
            for i, sensor in enumerate(batch.sensors):
                hits = int(np.count_nonzero(masks >> i & 1))
                if hits:
                    tally.anomalies[sensor] = hits
        return tally

    def __add__(self, other: BatchTally) -> BatchTally:
        return BatchTally(
            messages=self.messages + other.messages,
            readings=self.readings + other.readings,
            anomalies=self.anomalies + other.anomalies,
            dead_letters=self.dead_letters + other.dead_letters,
            latency_counts=[
                a + b for a, b in zip(self.latency_counts, other.latency_counts, strict=True)
            ],
            latency_sum=self.latency_sum + other.latency_sum,
            alarm_transitions=self.alarm_transitions + other.alarm_transitions,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "readings": self.readings,
            "anomalies": dict(self.anomalies),
            "dead_letters": dict(self.dead_letters),
            "latency_counts": self.latency_counts,
            "latency_sum": self.latency_sum,
            "alarm_transitions": dict(self.alarm_transitions),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchTally:
        return cls(
            messages=data["messages"],
            readings=data["readings"],
            anomalies=Tally(data["anomalies"]),
            dead_letters=Tally(data["dead_letters"]),
            latency_counts=list(data["latency_counts"]),
            latency_sum=data["latency_sum"],
            alarm_transitions=Tally(data["alarm_transitions"]),
        )


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
        for kind in DEAD_LETTER_KINDS:
            self.dead_letters.labels(kind=kind)
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
        self.simulator_bus_failures = Counter(
            "faultline_simulator_bus_failures",
            "Simulator publishes the bus refused (full, unreachable), then retried",
            registry=r,
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
        # The notifier's (faultline.notify), labelled by receiver name; each receiver's series
        # are exported at 0 when its notifier starts.
        self.notifications_delivered = Counter(
            "faultline_notifications_delivered",
            "Alarm transitions a receiver accepted",
            ["receiver"],
            registry=r,
        )
        self.notification_failures = Counter(
            "faultline_notification_failures",
            "Failed deliveries: network, timeout, status (a retryable HTTP answer) are retried; "
            "rejected (a permanent 4xx) is given up",
            ["receiver", "reason"],
            registry=r,
        )
        self.notifier_backlog = Gauge(
            "faultline_notifier_backlog",
            "Alarm transitions recorded but not yet delivered to a receiver (counted up to "
            "notify.backlog_cap)",
            ["receiver"],
            registry=r,
        )
        self.notifications_expired = Counter(
            "faultline_notifications_expired",
            "Alarm transitions given up undelivered, recorded more than notify.max_age_s ago",
            ["receiver"],
            registry=r,
        )
        self.stations_evicted = Counter(
            "faultline_stations_evicted",
            "Stations whose detector state was dropped after a silence longer than "
            "engine.evict_silent_after_s",
            registry=r,
        )
        # Labelled so that only an engine that measures it exports it (the in-process engine
        # does not yet): an unlabelled gauge would read 0 everywhere else.
        self.consumer_lag = Gauge(
            "faultline_consumer_lag",
            "Messages on a topic the engine has not read yet (Spark engine: when its last "
            "micro-batch was planned)",
            ["topic"],
            registry=r,
        )
        self.alarm_transitions = Counter(
            "faultline_alarm_transitions",
            "Alarm condition changes the engine recorded (raise, escalate, clear), by kind",
            ["kind", "action"],
            registry=r,
        )
        for kind in get_args(AlarmKind):
            for action in get_args(EngineAction):
                self.alarm_transitions.labels(kind=kind, action=action)
        # Alarm state and alarm load (faultline.alarm_figures refreshes them from the store).
        self.alarms_active = Gauge(
            "faultline_alarms_active",
            "Alarms whose condition is active, by kind and severity",
            ["kind", "severity"],
            registry=r,
        )
        self.alarms_unacknowledged = Gauge(
            "faultline_alarms_unacknowledged",
            "Alarms whose latest activation nobody has acknowledged (active or cleared)",
            registry=r,
        )
        self.alarms_shelved = Gauge(
            "faultline_alarms_shelved", "Alarms an operator has shelved", registry=r
        )
        self.alarm_activations_10m = Gauge(
            "faultline_alarm_activations_10m",
            "Alarm activations in the last 10 minutes (ISA-18.2 aims at about 1 per operator)",
            registry=r,
        )
        self.alarm_activations_24h = Gauge(
            "faultline_alarm_activations_24h", "Alarm activations in the last 24 hours", registry=r
        )
        self.alarms_chattering = Gauge(
            "faultline_alarms_chattering",
            "Alarms activated 3 or more times within a minute in the last 24 hours",
            registry=r,
        )
        self.alarms_standing = Gauge(
            "faultline_alarms_standing", "Alarms active for longer than 24 hours", registry=r
        )
        self.alarm_figures_age = Gauge(
            "faultline_alarm_figures_age_seconds",
            "Seconds since the alarm gauges were last refreshed from the store",
            registry=r,
        )
        # The latest drift check of the champion (Lifecycle.check_drift), set where it ran: the
        # scheduled worker (lifecycle.drift_interval_s) or the API's check_drift_retrain.
        self.model_drift_shift = Gauge(
            "faultline_model_drift_shift",
            "Wasserstein distance of a sensor's recent readings from the model's reference, in "
            "reference standard deviations (1: moved by one)",
            ["sensor"],
            registry=r,
        )
        self.model_drift_psi = Gauge(
            "faultline_model_drift_psi",
            "Population stability index of a sensor's recent readings over the reference deciles",
            ["sensor"],
            registry=r,
        )
        self.model_drift_detected = Gauge(
            "faultline_model_drift_detected",
            "1 when the latest drift check found drift (a sensor, or the anomaly rate)",
            registry=r,
        )
        self.model_anomaly_rate = Gauge(
            "faultline_model_anomaly_rate",
            "Share of the recent readings the champion flags, at the latest drift check",
            registry=r,
        )
        self.model_drift_checked = Gauge(
            "faultline_model_drift_checked_timestamp_seconds",
            "When the latest drift check ran (epoch seconds)",
            registry=r,
        )
        self.model_drift_check_failures = Counter(
            "faultline_model_drift_check_failures",
            "Scheduled drift checks that failed (retried at the next interval)",
            registry=r,
        )
        self.ingest_rate = RateMeter(clock=clock)

    def record_batch(self, tally: BatchTally, seconds: float) -> None:
        """A committed engine batch of `tally.messages` messages that took `seconds`."""
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(tally.messages)
        self.readings.inc(tally.readings)
        self.ingest_rate.add(tally.readings)
        for kind, count in tally.dead_letters.items():
            self.dead_letters.labels(kind=kind).inc(count)
        for sensor, count in tally.anomalies.items():
            self.anomalies.labels(sensor=sensor).inc(count)
        self.record_alarm_transitions(tally)
        if tally.readings:
            _add_counts(self.latency, tally.latency_counts, tally.latency_sum)

    def record_alarm_transitions(self, tally: BatchTally) -> None:
        """The alarm transitions of a stored batch (alone: those of a Spark timeout, which
        carries no message)."""
        for kind_action, count in tally.alarm_transitions.items():
            kind, _, action = kind_action.partition("/")
            self.alarm_transitions.labels(kind=kind, action=action).inc(count)

    def record_drift(
        self,
        *,
        checked_at_ms: int,
        detected: bool,
        shifts: Mapping[str, float],
        psis: Mapping[str, float],
        anomaly_rate: float | None,
    ) -> None:
        """A drift check's figures; a sensor it could not judge keeps no stale value."""
        self.model_drift_shift.clear()
        self.model_drift_psi.clear()
        for sensor, shift in shifts.items():
            self.model_drift_shift.labels(sensor=sensor).set(shift)
        for sensor, psi in psis.items():
            self.model_drift_psi.labels(sensor=sensor).set(psi)
        self.model_drift_detected.set(1 if detected else 0)
        if anomaly_rate is not None:
            self.model_anomaly_rate.set(anomaly_rate)
        self.model_drift_checked.set(checked_at_ms / 1000)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
