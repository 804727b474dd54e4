"""Assembles Faultline's parts from the settings and runs them until told to stop.

This is the only place that knows which concrete bus, store, model registry and detectors a
deployment uses; each part below it only sees protocols.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faultline.bus import Bus, open_bus
from faultline.clock import Clock, SystemClock
from faultline.codec import ReadingDecoder
from faultline.config import LifecycleSettings, Settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors, model_detector
from faultline.engine import Engine
from faultline.engine.swap import ModelFollower
from faultline.metrics import Metrics
from faultline.models.champion import ensure_model, model_registry
from faultline.models.registry import MlflowModelRegistry
from faultline.models.watch import ChampionWatcher
from faultline.schema import FaultLabel, WriteBatch, empty_readings
from faultline.store import DeadLetterRetention, Store, StoreError, open_store
from faultline.supervisor import Supervisor

if TYPE_CHECKING:
    from faultline.api.context import AppContext, ModelLifecycle

log = logging.getLogger(__name__)


def fault_sink(store: Store, sensors: Sequence[str]) -> Callable[[list[FaultLabel]], None]:
    """Stores the simulator's ground-truth labels as they are injected."""

    def write(labels: list[FaultLabel]) -> None:
        if labels:
            store.write(
                WriteBatch(
                    sensors=tuple(sensors),
                    detectors=(),
                    readings=empty_readings(sensors),
                    processed_at=0,
                    faults=labels,
                )
            )

    return write


def run_drift_schedule(
    lifecycle: ModelLifecycle,
    settings: LifecycleSettings,
    metrics: Metrics,
    clock: Clock,
    stop: threading.Event,
) -> None:
    """Check the champion's drift every `drift_interval_s` (with `auto_retrain`: the whole
    cycle, retrain → gate → promote) until `stop`, its figures into the drift gauges.

    The first check is due an interval after the latest recorded one (by any process), so a
    restart does not check again at once. A failed check is logged and counted, and tried again
    an interval later: a registry or store that is down for now must not end the schedule.
    """
    from faultline.api.model_routes import observe_drift

    interval_ms = round(settings.drift_interval_s * 1000)
    try:
        last = lifecycle.latest_drift()
    except Exception:
        log.exception("scheduled drift: the latest recorded check could not be read")
        last = None
    if last is not None:
        observe_drift(metrics, last)
    due = clock.now_ms() if last is None else last.checked_at_ms + interval_ms
    while not stop.wait(max(0, due - clock.now_ms()) / 1000):
        try:
            if settings.auto_retrain:
                outcome = lifecycle.check_drift_retrain(actor="auto")
                recorded, said = outcome.drift, outcome.msg
            else:
                recorded = lifecycle.check_drift()
                said = recorded.report.message
        except Exception:
            metrics.model_drift_check_failures.inc()
            log.exception(
                "scheduled drift check failed; the next in %.0f s", settings.drift_interval_s
            )
        else:
            observe_drift(metrics, recorded)
            log.info("scheduled drift check: %s", said)
        due = clock.now_ms() + interval_ms


@dataclass
class Runtime:
    """The running parts of one Faultline process."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    store: Store = field(init=False)
    bus: Bus = field(init=False)
    stop: threading.Event = field(default_factory=threading.Event)
    supervisor: Supervisor = field(init=False)
    engine: Engine | None = None
    pipeline: DetectorPipeline | None = None
    registry: MlflowModelRegistry | None = None
    lifecycle: ModelLifecycle | None = None

    def __post_init__(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(self.settings.store_url)
        self.bus = open_bus(self.settings.bus_url)
        self.supervisor = Supervisor(self.stop, self.metrics)

    def load_model(self) -> MlflowModelRegistry:
        registry = model_registry(self.settings)
        info = ensure_model(self.settings, registry)
        self.metrics.model_info.labels(name=info.name, version=info.run_id).set(1)
        self.registry = registry
        return registry

    def model_lifecycle(self) -> ModelLifecycle:
        """Retraining, the gate and promotion over this process's registry and store (built
        on first use, with the registry's champion)."""
        if self.lifecycle is None:
            from faultline.models.lifecycle import Lifecycle

            registry = self.registry or self.load_model()
            self.lifecycle = Lifecycle(self.settings, self.store, registry, self.clock)
        return self.lifecycle

    def start_engine(self) -> Engine:
        registry = self.registry or self.load_model()
        s = self.settings
        # The engine restores the detector state from its checkpoints in the store.
        model = registry.current()
        self.pipeline = DetectorPipeline(build_detectors(s, model))
        # The hot swap: the watcher loads a promoted (or rolled back) champion in its own
        # thread; the engine picks it up between batches.
        watcher = ChampionWatcher(registry, model, s.lifecycle.swap_interval_s)
        follower = ModelFollower(
            self.pipeline,
            model,
            lambda: watcher.model,
            lambda m: model_detector(s, m),
            self.metrics,
        )
        self.engine = Engine(
            bus=self.bus,
            topic=s.readings_topic,
            store=self.store,
            decoder=ReadingDecoder(s.sensors, s.ingest),
            pipeline=follower,
            settings=s.engine,
            metrics=self.metrics,
            alarms=s.alarms,
            clock=self.clock,
        )
        self._spawn("engine", self.engine.run)
        self._spawn("model-watch", watcher.run)
        return self.engine

    def start_simulator(self) -> None:
        from faultline.simulate import Simulator, run_simulator

        sim = Simulator.from_settings(self.settings)

        def simulate(stop: threading.Event) -> None:
            run_simulator(
                sim,
                self.bus,
                self.settings.readings_topic,
                clock=self.clock,
                rate_hz=self.settings.simulate.rate_hz,
                stop=stop,
                on_labels=fault_sink(self.store, self.settings.sensor_names),
                metrics=self.metrics,
            )

        self._spawn("simulator", simulate)

    def start_global_anomalies(self) -> None:
        """Run the daily global-anomaly job in this process, shortly after each UTC midnight."""
        from faultline.batch.scheduler import run_daily_global_anomalies

        def schedule(stop: threading.Event) -> None:
            run_daily_global_anomalies(self.settings, self.store, self.clock, stop)

        self._spawn("global-anomalies", schedule)

    def start_notifier(self) -> None:
        """Deliver alarm transitions to the receivers in `notify.receivers` (faultline.notify),
        one supervised worker each; with none configured, alarms are in the API only."""
        from faultline.notify import build_notifiers

        for notifier in build_notifiers(self.settings, self.store, self.metrics, self.clock):
            self._spawn(f"notify-{notifier.receiver.name}", notifier.run)

    def start_retention(self) -> None:
        """Expire dead letters past the retention's age or count now and every interval."""
        r = self.settings.retention
        policy = DeadLetterRetention(r.dead_letter_max_age_s, r.dead_letter_max_count)

        def expire(stop: threading.Event) -> None:
            while True:
                try:
                    gone = self.store.expire(policy, self.clock.now_ms())
                except StoreError as exc:
                    # The store is down for now: the letters wait for the next pass.
                    log.warning("dead-letter retention: %s", exc)
                else:
                    if gone:
                        self.metrics.dead_letters_expired.inc(gone)
                        log.info("dead-letter retention deleted %d letters", gone)
                if stop.wait(r.interval_s):
                    return

        self._spawn("retention", expire)

    def start_lifecycle(self) -> None:
        """Check drift on the schedule of `lifecycle.drift_interval_s` (0: only on demand,
        through the API), and with `lifecycle.auto_retrain` retrain, gate and promote on drift."""
        s = self.settings.lifecycle
        if s.drift_interval_s == 0:
            return
        lifecycle = self.model_lifecycle()

        def schedule(stop: threading.Event) -> None:
            run_drift_schedule(lifecycle, s, self.metrics, self.clock, stop)

        self._spawn("lifecycle", schedule)

    def start_alarm_figures(self) -> None:
        """Keep the alarm gauges current from the store (faultline.alarm_figures)."""
        from faultline.alarm_figures import AlarmFigures

        self._spawn("alarm-figures", AlarmFigures(self.store, self.metrics, self.clock).run)

    def app_context(self) -> AppContext:
        """What the API of this process serves: its store, bus, metrics, model and probes."""
        from faultline.api.context import AppContext
        from faultline.tokens import TokenStore

        return AppContext(
            settings=self.settings,
            store=self.store,
            bus=self.bus,
            metrics=self.metrics,
            clock=self.clock,
            models=self.registry,
            tokens=TokenStore(self.settings.tokens_path, self.clock),
            probes=self.probes(),
            lifecycle=None if self.registry is None else self.model_lifecycle(),
        )

    def probes(self) -> dict[str, Callable[[], str | None]]:
        """Health checks the API reports: a crashed worker or a stuck engine is not healthy."""
        checks = {name: self.supervisor.probe(name) for name in self.supervisor.workers}
        if self.engine is not None:
            engine = self.engine
            checks["engine_store"] = lambda: engine.last_error
        return checks

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop producers first, let the engine finish its batch and checkpoint, then close."""
        self.stop.set()
        for name in self.supervisor.join(timeout_s):
            log.warning("%s did not stop within %.0f s", name, timeout_s)
        self.bus.close()
        self.store.close()

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        self.supervisor.spawn(name, target)
