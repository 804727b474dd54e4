"""The notifier: one receiver's delivery loop over the store's transition log.

Each step reads the log from the receiver's position (faultline.notify.outbox), tells the
receiver what it has not been told, in order, a page at a time, and saves the position in the
store after each page. When the receiver fails, the position reached is saved and the step is
retried after an exponential backoff with jitter, until the receiver is back; the other
receivers, in notifiers of their own, go on. A transition the receiver refuses for good (a
4xx) is logged, counted and passed over; one recorded more than `max_age_s` ago is given up,
counted. A receiver that forgets what it is not told again (Alertmanager) is sent the active,
unshelved alarms every `resend_s`, once the log has been told up to its end.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Sequence

from faultline.clock import Clock
from faultline.config import NotifySettings, Settings
from faultline.metrics import Metrics
from faultline.notify.http import DeliveryError, Rejected
from faultline.notify.outbox import GROUP, Position, split_page
from faultline.notify.receivers import Receiver, build_receiver
from faultline.schema import WriteBatch, empty_readings
from faultline.store.base import (
    AlarmRow,
    Alarms,
    Checkpoints,
    RecordedTransition,
    Store,
    StoreError,
    TransitionFeed,
)

log = logging.getLogger(__name__)

PAGES_PER_STEP = 20  # a step ends after these, so that a flood does not keep it from stopping
BACKLOG_EVERY_S = 5  # the backlog gauge is counted at most this often while there is one


class Backoff:
    """Delays between attempts: `initial_s`, doubling up to `max_s`, each drawn uniformly from
    its upper half (jitter, so that receivers coming back are not hit in step), never below a
    receiver's Retry-After (itself capped at `max_s`)."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng
        self.attempts = 0

    def next_s(self, retry_after_s: float | None = None) -> float:
        ceiling = min(self._initial_s * 2.0**self.attempts, self._max_s)
        self.attempts += 1
        delay = self._rng.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._max_s))
        return delay

    def reset(self) -> None:
        self.attempts = 0


class Notifier:
    """Delivers the transition log to one receiver, at least once and in order."""

    def __init__(
        self,
        receiver: Receiver,
        store: Store,
        settings: NotifySettings,
        sensors: Sequence[str],
        metrics: Metrics,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.receiver = receiver
        self._store = store
        self._settings = settings
        self._sensors = tuple(sensors)
        self._metrics = metrics
        self._clock = clock
        self._margin_ms = round(settings.margin_s * 1000)
        self._max_age_ms = round(settings.max_age_s * 1000)
        self.backoff = Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, rng or random.Random()
        )
        self.position: Position | None = None
        self._retry_at: int | None = None
        self._resend_at: int | None = None
        self._after: tuple[int, str] | None = None  # where a step that stopped short stopped
        self._backlog_at: int | None = None  # when the backlog is next counted
        name = receiver.name
        self._delivered = metrics.notifications_delivered.labels(receiver=name)
        self._expired = metrics.notifications_expired.labels(receiver=name)
        self._backlog = metrics.notifier_backlog.labels(receiver=name)
        for reason in ("network", "timeout", "status", "rejected"):
            metrics.notification_failures.labels(receiver=name, reason=reason)

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set (a supervised worker)."""
        while not stop.is_set():
            if stop.wait(self.step()):
                return

    def step(self) -> float:
        """Deliver what is due now; the seconds until the next step is due."""
        now = self._clock.now_ms()
        if self._retry_at is not None and now < self._retry_at:
            return (self._retry_at - now) / 1000
        try:
            if self.position is None:
                self.position = self._load(now)
            if not self._deliver(now):
                self._count_backlog(now)
                return 0.0  # more to tell: go on at once, having looked at the stop event
            if self.receiver.resends and (self._resend_at is None or now >= self._resend_at):
                self._resend(now)
                self._resend_at = now + round(self._settings.resend_s * 1000)
        except DeliveryError as exc:
            self._metrics.notification_failures.labels(
                receiver=self.receiver.name, reason=exc.reason
            ).inc()
            return self._fail(now, f"delivery failed: {exc}", exc.retry_after_s)
        except StoreError as exc:
            return self._fail(now, f"store: {exc}", None)
        self.backoff.reset()
        self._retry_at = self._backlog_at = None
        self._backlog.set(0)
        return self._settings.poll_s

    def _fail(self, now: int, problem: str, retry_after_s: float | None) -> float:
        delay = self.backoff.next_s(retry_after_s)
        self._retry_at = now + round(delay * 1000)
        log.warning("notifier %s: %s; retrying in %.1f s", self.receiver.name, problem, delay)
        with contextlib.suppress(StoreError):  # the gauge keeps its value while the store is out
            self._count_backlog(now)
        return delay

    def _count_backlog(self, now: int) -> None:
        """Set the backlog gauge, counting at most every BACKLOG_EVERY_S: counting reads up to
        backlog_cap transitions."""
        if self._backlog_at is None or now >= self._backlog_at:
            self._backlog_at = now + BACKLOG_EVERY_S * 1000
            self._backlog.set(self.backlog())

    def _load(self, now: int) -> Position:
        """The saved position; a receiver without one starts now (and saves that, so that a
        crash before its first delivery loses nothing recorded after the start)."""
        saved = self._store.query(Checkpoints(GROUP, self.receiver.name))
        if saved:
            return Position.restore(saved[0], self._margin_ms)
        position = Position(now, self._margin_ms)
        self._save(position, now)
        log.info(
            "notifier %s: no saved position, starting at the log's present", self.receiver.name
        )
        return position

    def _save(self, position: Position, now: int) -> None:
        self._store.write(
            WriteBatch(
                sensors=self._sensors,
                detectors=(),
                readings=empty_readings(self._sensors),
                processed_at=now,
                checkpoints=[position.checkpoint(self.receiver.name, now)],
            )
        )

    def _deliver(self, now: int) -> bool:
        """Tell the receiver what the log holds from its position on, up to PAGES_PER_STEP
        pages; whether that reached the end of the log."""
        position = self.position
        assert position is not None
        # A step that stopped short goes on where it stopped, not behind the margin again.
        after, self._after = self._after or position.read_from, None
        limit = self._settings.page
        for _ in range(PAGES_PER_STEP):
            page = self._store.query(TransitionFeed(after=after, limit=limit))
            full = len(page) == limit
            todo, resume = split_page(page, full)
            if full and not todo:  # one batch's transitions fill the page: read more at once
                limit *= 2
                continue
            limit = self._settings.page
            self._tell([item for item in todo if not position.finished(item)], position, now)
            if resume is None:
                return True
            after = resume
        self._after = after
        return False

    def _tell(self, items: list[RecordedTransition], position: Position, now: int) -> None:
        """Send `items` in order, in chunks of the receiver's batch; save the position after
        them, or up to a failure, which is raised."""
        finished: list[RecordedTransition] = []
        chunk: list[RecordedTransition] = []
        try:
            for item in items:
                if now - item.recorded_at > self._max_age_ms:
                    self._send(chunk, finished)
                    chunk = []
                    self._expired.inc()
                    log.warning(
                        "notifier %s: gave up %s, recorded %.0f s ago",
                        self.receiver.name,
                        item.transition.key,
                        (now - item.recorded_at) / 1000,
                    )
                    finished.append(item)
                elif not self.receiver.wants(item.transition):
                    self._send(chunk, finished)
                    chunk = []
                    finished.append(item)
                else:
                    chunk.append(item)
                    if len(chunk) >= self.receiver.batch:
                        self._send(chunk, finished)
                        chunk = []
            self._send(chunk, finished)
        finally:
            if finished:
                position.finish(finished)
                self._save(position, now)

    def _send(self, chunk: list[RecordedTransition], finished: list[RecordedTransition]) -> None:
        """Send a chunk; on a refusal for good, its transitions one by one, so that only the
        refused ones are passed over. Appends what is done to `finished`."""
        if not chunk:
            return
        try:
            self.receiver.send(chunk)
        except Rejected as exc:
            if len(chunk) > 1:
                for item in chunk:
                    self._send([item], finished)
                return
            self._metrics.notification_failures.labels(
                receiver=self.receiver.name, reason=exc.reason
            ).inc()
            log.error(
                "notifier %s: %s refused for good, passed over: %s",
                self.receiver.name,
                chunk[0].transition.key,
                exc,
            )
        else:
            self._delivered.inc(len(chunk))
        finished.extend(chunk)

    def _resend(self, now: int) -> None:
        rows: list[AlarmRow] = []
        after = None
        while True:
            page = self._store.query(Alarms(state="active", limit=self._settings.page, after=after))
            rows.extend(page.rows)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        self.receiver.resend([r.state for r in rows if not r.state.shelved(now)], now)

    def backlog(self) -> int:
        """Transitions from the position on that are not finished, up to notify.backlog_cap."""
        if self.position is None:
            return 0
        cap = self._settings.backlog_cap
        count, after = 0, self.position.read_from
        while count < cap:
            page = self._store.query(
                TransitionFeed(after=after, limit=min(self._settings.page, cap))
            )
            count += sum(1 for item in page if not self.position.finished(item))
            if len(page) < min(self._settings.page, cap):
                break
            after = (page[-1].recorded_at, page[-1].transition.key)
        return min(count, cap)


def build_notifiers(
    settings: Settings, store: Store, metrics: Metrics, clock: Clock
) -> list[Notifier]:
    """A notifier per configured receiver (none configured: none)."""
    return [
        Notifier(
            build_receiver(r, clock), store, settings.notify, settings.sensor_names, metrics, clock
        )
        for r in settings.notify.receivers
    ]
