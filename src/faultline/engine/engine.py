"""The in-process engine: consume a micro-batch, decode, detect, store, then acknowledge.

Acknowledging only after the store has committed gives at-least-once delivery; the store's
idempotent keys turn the duplicates a crash can cause into no-ops. Detection runs once per batch:
if the store write fails, the same computed batch is retried (detector state has already learned
it, so recomputing would learn it twice). The detector state is checkpointed into the store with
the batches (faultline.engine.checkpoint) and the bus acknowledged only up to checkpoints, so a
restarted engine resumes from the last one: nothing re-warms and no reading is learned twice.
The stations held are bounded: readings of a new one beyond `max_stations` are dead letters
(kind "station_limit"), and long-silent ones are forgotten.

No input stops the engine: the decoder turns any bytes into readings or dead letters; a reading
that makes detection raise is isolated by splitting the batch (`run_isolating`) and dead-lettered
with kind "poison"; readings the store refuses as invalid are isolated the same way (kind
"store"). Only failures that are not the input's fault (the store unreachable) are retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from faultline.alarm_schema import AlarmTransition
from faultline.bus import Bus, BusClosed, BusError, Consumer, Message
from faultline.clock import Clock, SystemClock
from faultline.codec import RawMessage, ReadingDecoder
from faultline.config import AlarmSettings, EngineSettings
from faultline.detect import DetectorPipeline
from faultline.detect.isolate import run_isolating
from faultline.engine.alarming import EngineAlarms
from faultline.engine.checkpoint import Checkpointer
from faultline.metrics import BatchTally, Metrics, observe_many
from faultline.schema import (
    IS_ANOMALY,
    RECEIVED_AT,
    SENSOR_MASK,
    STATION_ID,
    DeadLetter,
    WriteBatch,
)
from faultline.store import InvalidBatch, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A scored batch ready to be stored, with the message each of its readings came from."""

    batch: WriteBatch
    origin: Sequence[RawMessage]  # origin[k]: the message reading row k was decoded from
    checkpointed: bool = False  # the batch's checkpoints cover everything learned so far


def _dead_letter(message: RawMessage, reason: str, kind: str) -> DeadLetter:
    return DeadLetter.of(message.payload, reason, message.source, message.received_at, kind)


@dataclass(frozen=True, slots=True)
class StepResult:
    messages: int
    readings: int
    anomalies: int
    dead_letters: int


class Engine:
    """Runs the detector pipeline over a bus topic into a store."""

    def __init__(
        self,
        *,
        bus: Bus,
        topic: str,
        store: Store,
        decoder: ReadingDecoder,
        pipeline: Callable[[], DetectorPipeline] | DetectorPipeline,
        settings: EngineSettings,
        metrics: Metrics,
        alarms: AlarmSettings | None = None,
        clock: Clock | None = None,
        retry_backoff_s: float = 0.5,
        watch_interval_s: float = 1.0,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._store = store
        self._decoder = decoder
        # A callable lets the pipeline follow the registry's champion without the engine
        # knowing about models: it is asked again before every batch.
        if isinstance(pipeline, DetectorPipeline):
            fixed = pipeline
            self._pipeline: Callable[[], DetectorPipeline] = lambda: fixed
        else:
            self._pipeline = pipeline
        self._settings = settings
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._retry_backoff_s = retry_backoff_s
        self.alarms = EngineAlarms(
            alarms or AlarmSettings(), decoder.sensors, max_silent=settings.max_stations
        )
        self._watch_interval_ms = round(watch_interval_s * 1000)
        self._watched_ms: int | None = None  # when the silence watchdog last looked
        self._consumer: Consumer | None = None
        self._checkpointer: Checkpointer | None = None
        self._abandoned = False  # a batch was given up on stop (see commit)
        self.last_commit_ms: int | None = None
        self.last_error: str | None = None
        self._consume_error: str | None = None  # last_error while it is the bus's

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = self._bus.consumer(self._topic, self._settings.consumer_group)
        return self._consumer

    @property
    def checkpointer(self) -> Checkpointer:
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(
                store=self._store,
                group=self._settings.consumer_group,
                topic=self._topic,
                log_id=self._bus.log_id(self._topic),
                settings=self._settings,
                clock=self._clock,
                metrics=self._metrics,
                alarms=self.alarms,
            )
        return self._checkpointer

    def poll(self) -> list[Message]:
        """A micro-batch: up to `batch_max_records`, waiting at most `batch_max_wait_s`."""
        limit = self._settings.batch_max_records
        deadline = time.monotonic() + self._settings.batch_max_wait_s
        batch: list[Message] = []
        while len(batch) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and batch:
                break
            try:
                got = self.consumer.consume(limit - len(batch), max(remaining, 0.0))
            except BusClosed:
                raise
            except BusError:
                if not batch:
                    raise  # nothing taken: step backs off and polls again
                # What came before is taken (the consumer moved past it): process it now.
                break
            if not got:
                break
            batch.extend(got)
        return batch

    def prepare(self, messages: list[Message]) -> Prepared:
        """Decode and score a batch, with a checkpoint when one is due; apart from detector
        state (and loading checkpoints of partitions met anew) pure computation."""
        pipeline = self._pipeline()
        checkpointer = self.checkpointer
        fresh = checkpointer.admit(messages, pipeline)
        raw = [RawMessage(m.value, m.source, m.timestamp_ms, m.offset) for m in fresh]
        decoded = self._decoder.decode(raw)
        dead_letters = list(decoded.dead_letters)
        readings, rows = self._bound_stations(decoded.readings, decoded.rows, raw, dead_letters)
        isolated = run_isolating(pipeline, readings, self._metrics.batch_splits.inc)
        if isolated.refused:
            for position, reason in isolated.refused:
                dead_letters.append(_dead_letter(raw[rows[position]], reason, "poison"))
            rows = np.delete(rows, [position for position, _ in isolated.refused])
        verdicts = isolated.verdicts
        checkpointer.learned(
            verdicts[STATION_ID].tolist(),
            [fresh[i].partition for i in rows.tolist()],
            verdicts[RECEIVED_AT].tolist(),
        )
        transitions = self.alarms.step(verdicts)
        # A full batch means a backlog: the newest readings of a station may still wait on the
        # bus, so silence is judged only once the engine has caught up.
        transitions += self._watch(caught_up=len(messages) < self._settings.batch_max_records)
        due = checkpointer.due()
        batch = WriteBatch(
            sensors=self._decoder.sensors,
            detectors=pipeline.names,
            readings=verdicts,
            processed_at=self._clock.now_ms(),
            dead_letters=dead_letters,
            checkpoints=checkpointer.take(pipeline) if due else (),
            alarm_transitions=transitions,
        )
        return Prepared(batch, [raw[i] for i in rows.tolist()], checkpointed=due)

    def _watch_due(self) -> bool:
        watched = self._watched_ms
        return watched is None or self._clock.now_ms() - watched >= self._watch_interval_ms

    def _watch(self, caught_up: bool) -> list[AlarmTransition]:
        """The silence transitions, every `watch_interval_s` while caught up; the watchdog
        is timer-driven: an idle engine asks it too (see `step`)."""
        if not caught_up or not self._watch_due():
            return []
        now = self._watched_ms = self._clock.now_ms()
        return self.alarms.watch(self.checkpointer.last_seen, now)

    def _bound_stations(
        self,
        readings: pd.DataFrame,
        rows: np.ndarray,
        raw: Sequence[RawMessage],
        dead_letters: list[DeadLetter],
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """The readings less those of new stations beyond `max_stations`, which become dead
        letters; new stations are admitted in the order they arrive while there is room."""
        checkpointer = self.checkpointer
        ids = readings[STATION_ID].to_numpy()
        new = [s for s in pd.unique(ids) if checkpointer.is_new(s)]
        cap = self._settings.max_stations
        room = max(0, cap - checkpointer.stations)
        if len(new) <= room:
            return readings, rows
        refused = np.isin(ids, new[room:])
        for k in np.flatnonzero(refused).tolist():
            reason = (
                f"station {ids[k]!r} refused: the engine already holds the state of {cap} "
                "stations (engine.max_stations); a new one is admitted once a silent one is "
                "evicted (engine.evict_silent_after_s)"
            )
            dead_letters.append(_dead_letter(raw[rows[k]], reason, "station_limit"))
        keep = ~refused
        return readings[keep].reset_index(drop=True), rows[keep]

    def commit(self, messages: list[Message], prepared: Prepared, stop: threading.Event) -> bool:
        """Store the batch (retrying while the store fails) and acknowledge it.

        Returns False when asked to stop before the store accepted it: the messages stay
        unacknowledged and will be delivered again. The detector state has learned them, so
        until `close` the engine commits nothing more: a later checkpoint or acknowledgement
        would cover readings that were never stored.
        """
        batch = prepared.batch
        while True:
            try:
                self._write_isolating(batch, prepared.origin)
                break
            except Exception as exc:  # any store failure: keep the batch, retry, never drop it
                self.last_error = f"store write failed: {exc}"
                self._metrics.batch_failures.inc()
                log.warning("store write failed, retrying: %s", exc)
                if stop.wait(self._retry_backoff_s):
                    self._abandoned = True
                    return False
                # Stamped anew for the retry: processed_at is when the verdicts were stored,
                # and the notifier reads alarm transitions in the order of that stamp, so an
                # outage must not land them far behind what it has already sent.
                batch = replace(batch, processed_at=self._clock.now_ms())
        done = self.checkpointer.stored(messages, prepared.checkpointed)
        if done and not self._ack(done, stop):
            return False
        self.last_error = None
        self.last_commit_ms = self._clock.now_ms()
        self._observe(messages, batch)
        return True

    def _ack(self, messages: list[Message], stop: threading.Event) -> bool:
        """Acknowledge stored messages, retrying while the bus fails; False when asked to stop
        first (they are stored, so their redelivery after a restart stores nothing twice)."""
        while True:
            try:
                self.consumer.ack(messages)
                return True
            except BusClosed:
                raise
            except BusError as exc:
                self.last_error = f"bus acknowledgement failed: {exc}"
                log.warning("bus acknowledgement failed, retrying: %s", exc)
                if stop.wait(self._retry_backoff_s):
                    self._abandoned = True
                    return False

    def _write_isolating(self, batch: WriteBatch, origin: Sequence[RawMessage]) -> None:
        """Write `batch`; when the store refuses its content, split the readings in halves until
        the ones it refuses on their own are found, and store those as dead letters instead.

        The first half carries the batch's dead letters and fault labels, the second its
        checkpoints, which a store must never commit before the readings they cover.
        """
        try:
            self._store.write(batch)
            return
        except InvalidBatch as exc:
            if len(batch.readings) != 1:
                if len(batch.readings) == 0:
                    raise  # no reading to blame: the batch's other parts are at fault
                refused = None
            else:
                refused = _dead_letter(origin[0], f"the store refused this reading: {exc}", "store")
        if refused is not None:
            log.error("dead-lettering a reading the store refused: %s", refused.reason)
            empty = batch.readings.iloc[:0]
            self._store.write(
                replace(batch, readings=empty, dead_letters=[*batch.dead_letters, refused])
            )
            return
        self._metrics.batch_splits.inc()
        half = len(batch.readings) // 2
        first = replace(batch, readings=batch.readings.iloc[:half], checkpoints=())
        second = replace(batch, readings=batch.readings.iloc[half:], dead_letters=(), faults=())
        self._write_isolating(first, origin[:half])
        self._write_isolating(second, origin[half:])

    def step(self, stop: threading.Event | None = None) -> StepResult | None:
        """One micro-batch end to end; None when there was nothing to do or it was abandoned."""
        stop = stop or threading.Event()
        if self._abandoned:
            return None
        try:
            messages = self.poll()
        except BusClosed:
            raise
        except BusError as exc:  # a full disk, say: nothing was taken, so back off and poll again
            self.last_error = self._consume_error = f"bus consume failed: {exc}"
            log.warning("bus consume failed, retrying: %s", exc)
            stop.wait(self._retry_backoff_s)
            return None
        if self._consume_error is not None:  # the bus answers again, batch or not
            if self.last_error == self._consume_error:
                self.last_error = None
            self._consume_error = None
        if not messages:
            # Idle: checkpoint what waits, and let the watchdog see who went silent.
            checkpointer = self.checkpointer
            if self._watch_due() or (checkpointer.pending and checkpointer.due()):
                prepared = self.prepare([])
                if prepared.checkpointed or prepared.batch.alarm_transitions:
                    self.commit([], prepared, stop)
            return None
        started = time.perf_counter()
        prepared = self.prepare(messages)
        if not self.commit(messages, prepared, stop):
            return None
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        batch = prepared.batch
        return StepResult(
            messages=len(messages),
            readings=len(batch.readings),
            anomalies=int(batch.readings[IS_ANOMALY].sum()),
            dead_letters=len(batch.dead_letters),
        )

    def run(self, stop: threading.Event, drain_s: float = 5.0) -> None:
        """Process until `stop` is set, then drain what is already waiting for up to `drain_s`.

        The batch in flight is always finished, never dropped; a drain cut short leaves the
        rest unacknowledged on the bus, to be delivered again.
        """
        try:
            while not stop.is_set():
                self.step(stop)
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline and self.step(stop) is not None:
                pass
            self.checkpoint(stop)
        finally:
            self.close()

    def checkpoint(self, stop: threading.Event) -> None:
        """Checkpoint what was learned and acknowledge it now (as a clean shutdown does)."""
        if self.checkpointer.pending and not self._abandoned:
            self.checkpointer.request()
            self.commit([], self.prepare([]), stop)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._checkpointer is not None:
            self._checkpointer.reset()
        self._abandoned = False

    def _observe(self, messages: list[Message], batch: WriteBatch) -> None:
        m = self._metrics
        readings = batch.readings
        m.batches.inc()
        m.batch_size.observe(len(messages))
        m.readings.inc(len(readings))
        m.ingest_rate.add(len(readings))
        for letter in batch.dead_letters:
            m.dead_letters.labels(kind=letter.kind).inc()
        if batch.alarm_transitions:
            m.record_alarm_transitions(BatchTally.of(batch))
        if len(readings):
            latency = (batch.processed_at - readings[RECEIVED_AT].to_numpy()) / 1000.0
            observe_many(m.latency, np.maximum(latency, 0.0))
            masks = readings[SENSOR_MASK].to_numpy()[readings[IS_ANOMALY].to_numpy()]
            unattributed = int(np.count_nonzero(masks == 0))
            if unattributed:
                m.anomalies.labels(sensor="none").inc(unattributed)
            for i, sensor in enumerate(batch.sensors):
                hits = int(np.count_nonzero(masks >> i & 1))
                if hits:
                    m.anomalies.labels(sensor=sensor).inc(hits)
