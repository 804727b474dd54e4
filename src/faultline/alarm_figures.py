"""Alarm state and alarm-load figures as Prometheus gauges, refreshed from the store.

The store is where both engines' alarms and every operator's actions meet, so the figures are
read from there rather than counted in one engine: `refresh` pages through the active,
unacknowledged and shelved alarms and computes the load figures (faultline.alarms.load) over
the last 24 hours of activations. The process that serves the API runs it on a timer; a failing
store leaves the previous values and `faultline_alarm_figures_age_seconds` growing.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import get_args

from faultline.alarm_schema import AlarmKind
from faultline.alarms import alarm_load
from faultline.alarms.load import STANDING_MS, TEN_MINUTES_MS
from faultline.clock import Clock
from faultline.config import SEVERITIES
from faultline.metrics import Metrics
from faultline.store import AlarmRow, Alarms, AlarmStateFilter, AlarmTransitions, Store, StoreError

log = logging.getLogger(__name__)

DAY_MS = 24 * 3_600_000
_PAGE = 1000


class AlarmFigures:
    """Keeps the alarm gauges of `metrics` current; `run` refreshes every `interval_s`."""

    def __init__(
        self, store: Store, metrics: Metrics, clock: Clock, interval_s: float = 15.0
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._interval_s = interval_s
        self._refreshed_ms: int | None = None
        metrics.alarm_figures_age.set_function(self._age_s)

    def _age_s(self) -> float:
        if self._refreshed_ms is None:
            return float("nan")
        return (self._clock.now_ms() - self._refreshed_ms) / 1000

    def _rows(self, state: AlarmStateFilter, now_ms: int) -> Iterator[AlarmRow]:
        after = None
        while True:
            page = self._store.query(Alarms(state=state, now_ms=now_ms, limit=_PAGE, after=after))
            yield from page.rows
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def refresh(self) -> None:
        """Read the figures from the store now; StoreError leaves the gauges as they were."""
        now = self._clock.now_ms()
        active = list(self._rows("active", now))
        unacknowledged = sum(1 for _ in self._rows("unacknowledged", now))
        shelved = sum(1 for _ in self._rows("shelved", now))
        recent = self._store.query(AlarmTransitions(now - DAY_MS, now + 1, ("raise", "clear")))
        load = alarm_load(recent, now - DAY_MS, now + 1)

        m = self._metrics
        by_label: Counter[tuple[str, str]] = Counter(
            (r.state.alarm.kind, r.state.condition.severity) for r in active
        )
        for kind in get_args(AlarmKind):
            for severity in SEVERITIES:
                m.alarms_active.labels(kind=kind, severity=severity).set(
                    by_label.get((kind, severity), 0)
                )
        m.alarms_unacknowledged.set(unacknowledged)
        m.alarms_shelved.set(shelved)
        m.alarm_activations_10m.set(
            sum(1 for t in recent if t.action == "raise" and t.ts >= now - TEN_MINUTES_MS)
        )
        m.alarm_activations_24h.set(load.activations)
        m.alarms_chattering.set(len(load.chattering))
        m.alarms_standing.set(
            sum(
                1
                for r in active
                if r.state.condition.activation_ts is not None
                and now - r.state.condition.activation_ts > STANDING_MS
            )
        )
        self._refreshed_ms = now

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.refresh()
            except StoreError as exc:
                log.warning("alarm figures not refreshed: %s", exc)
            if stop.wait(self._interval_s):
                return
