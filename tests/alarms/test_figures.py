"""The alarm gauges follow the store: what is active, unacknowledged, shelved, and the load."""

from __future__ import annotations

import math
import threading

from faultline.alarm_figures import AlarmFigures
from faultline.alarm_schema import ANOMALY, SILENT, STATION_WIDE, AlarmKey, AlarmTransition
from faultline.clock import ManualClock
from faultline.metrics import Metrics
from faultline.schema import WriteBatch, empty_readings
from faultline.store import MemoryStore, Query, Store, StoreError
from faultline.store.base import DeadLetterRetention, R
from faultline.store.forwarding import ForwardingStore

T0 = 1_767_225_600_000
HOUR = 3_600_000


def write(store: Store, *transitions: AlarmTransition) -> None:
    store.write(
        WriteBatch(
            sensors=("temperature",),
            detectors=(),
            readings=empty_readings(("temperature",)),
            processed_at=T0,
            alarm_transitions=transitions,
        )
    )


def raise_(station: str, ts: int, severity: str = "high", kind: str = ANOMALY) -> AlarmTransition:
    sensor = "temperature" if kind == ANOMALY else STATION_WIDE
    return AlarmTransition(AlarmKey(station, sensor, kind), "raise", ts, ts, severity=severity)  # type: ignore[arg-type]


def clear(t: AlarmTransition, ts: int) -> AlarmTransition:
    return AlarmTransition(t.alarm, "clear", ts, t.activation_ts, severity=t.severity)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, name
    return found


def test_the_gauges_count_what_the_store_holds() -> None:
    clock = ManualClock(T0 + 30 * HOUR)
    now = clock.now_ms()
    store, metrics = MemoryStore(), Metrics()
    standing = raise_("s1", T0)  # active for 30 hours
    chatter = [raise_("s2", now - 50_000 + k * 10_000) for k in range(3)]
    write(store, standing, raise_("s3", now - 60_000, "critical"), raise_("s4", now - 2 * HOUR))
    write(store, raise_("s5", now - 5_000, kind=SILENT))
    for t in chatter:  # three activations of one alarm within a minute
        write(store, t, clear(t, t.ts + 1000))
    figures = AlarmFigures(store, metrics, clock)
    assert math.isnan(value(metrics, "faultline_alarm_figures_age_seconds"))

    figures.refresh()

    assert value(metrics, "faultline_alarms_active", kind="anomaly", severity="high") == 2
    assert value(metrics, "faultline_alarms_active", kind="anomaly", severity="critical") == 1
    assert value(metrics, "faultline_alarms_active", kind="silent", severity="high") == 1
    assert value(metrics, "faultline_alarms_active", kind="silent", severity="low") == 0
    assert value(metrics, "faultline_alarms_unacknowledged") == 5  # s1..s5, s2 cleared
    assert value(metrics, "faultline_alarms_shelved") == 0
    assert value(metrics, "faultline_alarm_activations_10m") == 5  # s3, s5 and s2 three times
    assert value(metrics, "faultline_alarm_activations_24h") == 6  # s1 was raised 30 h ago
    assert value(metrics, "faultline_alarms_chattering") == 1
    assert value(metrics, "faultline_alarms_standing") == 1
    clock.advance(7)
    assert value(metrics, "faultline_alarm_figures_age_seconds") == 7


class Switch(ForwardingStore):
    """A real store that stops answering when told to (a unit-level fault injector)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError("the store is down")

    def write(self, batch: WriteBatch) -> None:
        self._check()
        self.inner.write(batch)

    def query(self, q: Query[R]) -> R:
        self._check()
        return self.inner.query(q)

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        self._check()
        return self.inner.expire(retention, now_ms)


def test_a_failing_store_leaves_the_gauges_and_their_age_grows() -> None:
    clock, metrics = ManualClock(T0), Metrics()
    store = Switch(MemoryStore())
    write(store, raise_("s1", T0 - 1000))
    figures = AlarmFigures(store, metrics, clock, interval_s=0.01)
    figures.refresh()
    store.down = True
    clock.advance(60)
    stop = threading.Event()
    worker = threading.Thread(target=figures.run, args=(stop,))
    worker.start()
    stop.wait(0.1)  # a few failed refreshes
    stop.set()
    worker.join(5)
    assert not worker.is_alive()  # the store's failure did not end the worker
    assert value(metrics, "faultline_alarms_active", kind="anomaly", severity="high") == 1
    assert value(metrics, "faultline_alarm_figures_age_seconds") == 60
