"""The notifier over a memory store with a recording receiver: order, at-least-once across
restarts, the margin for late commits, backoff, refusals, expiry, the backlog gauge."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from faultline.clock import ManualClock
from faultline.config import NotifySettings
from faultline.metrics import Metrics
from faultline.notify import Backoff, Notifier, Retryable
from faultline.notify.outbox import GROUP
from faultline.store import Checkpoints, Store
from faultline.store.memory import MemoryStore
from tests.notify.support import SENSORS, T0, Recorder, acked, alarm, cleared, raised, record

SETTINGS = NotifySettings(
    margin_s=5, max_age_s=3600, backoff_initial_s=1, backoff_max_s=60, page=4, resend_s=60
)


def notifier(
    store: Store,
    receiver: Recorder,
    clock: ManualClock,
    metrics: Metrics | None = None,
    settings: NotifySettings = SETTINGS,
) -> Notifier:
    return Notifier(
        receiver, store, settings, SENSORS, metrics or Metrics(), clock, rng=random.Random(1)
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def test_a_batch_is_told_in_the_order_things_happened(clock: ManualClock) -> None:
    """The log orders one batch's transitions by key, where clear sorts before raise; the
    receiver is told the raise first."""
    store, rec = MemoryStore(), Recorder()
    n = notifier(store, rec, clock)
    n.step()  # starts at the present
    a, b = alarm("s-1"), alarm("s-2")
    record(store, [cleared(a, T0 + 50, T0 + 10), raised(a, T0 + 10), raised(b, T0 + 20)], T0 + 100)
    clock.advance(1)
    n.step()
    assert rec.keys == [
        raised(a, T0 + 10).key,
        raised(b, T0 + 20).key,
        cleared(a, T0 + 50, T0 + 10).key,
    ]


def test_everything_is_delivered_across_pages_and_batches_in_feed_order(clock: ManualClock) -> None:
    store, rec = MemoryStore(), Recorder()
    n = notifier(store, rec, clock)
    n.step()
    expected = []
    for i in range(7):  # page=4: batches of 3 cross page ends
        batch = [raised(alarm(f"s-{i}-{j}"), T0 + i) for j in range(3)]
        record(store, batch, T0 + 100 + i)
        expected += sorted(t.key for t in batch)
    big = [raised(alarm(f"big-{j}"), T0 + 500) for j in range(9)]  # one batch beyond a page
    record(store, big, T0 + 200)
    expected += sorted(t.key for t in big)
    clock.advance(1)
    n.step()
    assert rec.keys == expected


def test_a_new_notifier_on_the_same_store_resumes_without_loss_or_repeat(
    clock: ManualClock,
) -> None:
    store, first = MemoryStore(), Recorder()
    n = notifier(store, first, clock)
    n.step()
    a = alarm()
    record(store, [raised(a, T0 + 1)], T0 + 10)
    clock.advance(1)
    n.step()
    record(store, [acked(a, T0 + 2, T0 + 1)], T0 + 20)
    record(store, [cleared(a, T0 + 3, T0 + 1)], T0 + 30)

    again = Recorder()
    restarted = notifier(store, again, clock)
    restarted.step()
    assert first.keys == [raised(a, T0 + 1).key]
    assert again.keys == [acked(a, T0 + 2, T0 + 1).key, cleared(a, T0 + 3, T0 + 1).key]
    [saved] = store.query(Checkpoints(GROUP, "rec"))
    assert saved.offset == T0 + 30


def test_a_late_commit_within_the_margin_is_delivered_and_nothing_twice(
    clock: ManualClock,
) -> None:
    """Another writer's batch, stamped earlier, commits after one the receiver was told."""
    store, rec = MemoryStore(), Recorder()
    n = notifier(store, rec, clock)
    n.step()
    a, b, c = alarm("s-1"), alarm("s-2"), alarm("s-3")
    record(store, [raised(a, T0 + 1)], T0 + 10_000)
    clock.advance(11)
    n.step()
    record(store, [raised(b, T0 + 2)], T0 + 6_000)  # 4 s behind: within the 5 s margin
    record(store, [raised(c, T0 + 3)], T0 + 4_000)  # 6 s behind: beyond it
    clock.advance(1)
    n.step()
    n.step()
    assert rec.keys == [raised(a, T0 + 1).key, raised(b, T0 + 2).key]


def test_a_failing_receiver_is_retried_with_growing_jittered_delays(clock: ManualClock) -> None:
    store, rec, metrics = MemoryStore(), Recorder(), Metrics()
    n = notifier(store, rec, clock, metrics)
    n.step()
    a = alarm()
    record(store, [raised(a, T0 + 1), cleared(a, T0 + 2, T0 + 1)], T0 + 10)
    rec.failures = [Retryable("down", "network") for _ in range(8)]
    delays = []
    for _ in range(8):
        clock.advance(61)  # beyond any delay: every step is due
        delays.append(n.step())
        assert n.step() == pytest.approx(delays[-1], abs=0.01)  # not due yet: nothing tried
    ceilings = [min(2.0**i, 60.0) for i in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert rec.sent == []
    assert (
        sample(metrics, "faultline_notification_failures_total", receiver="rec", reason="network")
        == 8
    )
    assert sample(metrics, "faultline_notifier_backlog", receiver="rec") == 2

    clock.advance(61)
    assert n.step() == SETTINGS.poll_s
    assert rec.keys == [raised(a, T0 + 1).key, cleared(a, T0 + 2, T0 + 1).key]
    assert sample(metrics, "faultline_notifier_backlog", receiver="rec") == 0
    assert sample(metrics, "faultline_notifications_delivered_total", receiver="rec") == 2
    assert n.backoff.attempts == 0


def test_progress_before_a_failure_is_kept(clock: ManualClock) -> None:
    store, rec = MemoryStore(), Recorder()
    n = notifier(store, rec, clock)
    n.step()
    keys = [raised(alarm(f"s-{i}"), T0 + i) for i in range(3)]
    record(store, keys, T0 + 10)
    rec.failures = []
    sent = rec.send

    calls = []

    def flaky(items):  # the second send fails
        calls.append(items)
        if len(calls) == 2:
            raise Retryable("down", "network")
        sent(items)

    rec.send = flaky  # type: ignore[method-assign]
    clock.advance(1)
    n.step()
    restarted = Recorder()
    notifier(store, restarted, clock).step()
    assert rec.keys + restarted.keys == [t.key for t in keys]


def test_retry_after_sets_the_least_delay() -> None:
    backoff = Backoff(1, 60, random.Random(0))
    assert backoff.next_s(retry_after_s=30) >= 30
    assert backoff.next_s(retry_after_s=3600) <= 60


def test_a_permanent_refusal_is_counted_and_passed_over(clock: ManualClock) -> None:
    store, rec, metrics = MemoryStore(), Recorder(batch=10), Metrics()
    n = notifier(store, rec, clock, metrics)
    n.step()
    batch = [raised(alarm(f"s-{i}"), T0 + i) for i in range(3)]
    rec.rejects = {batch[1].key}
    record(store, batch, T0 + 10)
    clock.advance(1)
    n.step()
    assert rec.keys == [batch[0].key, batch[2].key]
    assert (
        sample(metrics, "faultline_notification_failures_total", receiver="rec", reason="rejected")
        == 1
    )
    assert n.backoff.attempts == 0
    clock.advance(1)
    n.step()
    assert len(rec.sent) == 2  # not retried


def test_transitions_older_than_max_age_are_given_up(clock: ManualClock) -> None:
    store, rec, metrics = MemoryStore(), Recorder(), Metrics()
    n = notifier(store, rec, clock, metrics)
    n.step()
    a, b = alarm("s-1"), alarm("s-2")
    record(store, [raised(a, T0 + 1)], T0 + 1000)
    rec.failures = [Retryable("down", "network")]
    clock.advance(2)
    n.step()
    record(store, [raised(b, T0 + 2)], T0 + 3_500_000)
    clock.advance(3700)  # a's record is now more than an hour old, b's is not
    n.step()
    assert rec.keys == [raised(b, T0 + 2).key]
    assert sample(metrics, "faultline_notifications_expired_total", receiver="rec") == 1


def test_a_receiver_added_later_starts_at_the_present(clock: ManualClock) -> None:
    store = MemoryStore()
    record(store, [raised(alarm("old"), T0 - 60_000)], T0 - 60_000)
    rec = Recorder()
    n = notifier(store, rec, clock)
    n.step()
    record(store, [raised(alarm("new"), T0 + 1)], T0 + 1)
    clock.advance(1)
    n.step()
    assert rec.keys == [raised(alarm("new"), T0 + 1).key]


def test_store_outage_backs_off_without_counting_a_delivery_failure(clock: ManualClock) -> None:
    from faultline.store import StoreError

    store, rec, metrics = MemoryStore(), Recorder(), Metrics()
    n = notifier(store, rec, clock, metrics)
    n.step()
    query = store.query

    def down(q):  # type: ignore[no-untyped-def]
        raise StoreError("store down")

    store.query = down  # type: ignore[method-assign]
    assert n.step() >= 0.5
    store.query = query  # type: ignore[method-assign]
    for reason in ("network", "timeout", "status", "rejected"):
        assert (
            sample(metrics, "faultline_notification_failures_total", receiver="rec", reason=reason)
            == 0
        )


def test_a_flood_is_told_over_several_steps_that_each_end(clock: ManualClock) -> None:
    from faultline.notify.notifier import PAGES_PER_STEP

    store, rec = MemoryStore(), Recorder()
    n = notifier(store, rec, clock)
    n.step()
    total = SETTINGS.page * PAGES_PER_STEP * 2 + 3
    batch = [raised(alarm(f"s-{i:05d}"), T0 + i) for i in range(total)]
    for i, t in enumerate(batch):
        record(store, [t], T0 + 1 + i // 2)  # two per recorded_at, all within the margin
    clock.advance(1)
    delays = [n.step()]
    while delays[-1] == 0.0 and len(delays) < 100:
        delays.append(n.step())
    assert len(delays) > 2  # steps that stopped short, then the one that reached the end
    assert delays[-1] == SETTINGS.poll_s
    assert rec.keys == [t.key for t in batch]


class Forgetful(Recorder):
    """A receiver that must be told the active alarms again (as Alertmanager must)."""

    def __init__(self) -> None:
        super().__init__()
        self.resent: list[list[str]] = []

    def resend(self, alarms, now_ms):  # type: ignore[no-untyped-def]
        self.resent.append([s.alarm.id for s in alarms])


def test_active_unshelved_alarms_are_resent_every_resend_s(clock: ManualClock) -> None:
    from faultline.alarm_schema import AlarmState
    from faultline.alarms import apply, shelve

    store, rec = MemoryStore(), Forgetful()
    n = notifier(store, rec, clock)
    a, b, c = alarm("s-1"), alarm("s-2"), alarm("s-3")
    record(store, [raised(a, T0 - 5), raised(b, T0 - 5), raised(c, T0 - 5)], T0 - 5)
    record(store, [cleared(c, T0 - 2, T0 - 5)], T0 - 2)
    _, shelving = shelve(
        apply(AlarmState(b), raised(b, T0 - 5)), "ana", T0 - 1, T0 + 120_000, max_shelve_ms=10**9
    )
    record(store, [shelving], T0 - 1)
    n.step()
    assert rec.resent == [[a.id]]
    clock.advance(30)
    n.step()
    assert len(rec.resent) == 1  # not due yet
    clock.advance(31)
    n.step()
    assert rec.resent == [[a.id], [a.id]]
    clock.advance(120)  # b's shelving has ended
    n.step()
    assert sorted(rec.resent[-1]) == [a.id, b.id]


def test_no_resend_while_the_log_is_not_told_to_its_end(clock: ManualClock) -> None:
    store, rec = MemoryStore(), Forgetful()
    n = notifier(store, rec, clock)
    n.step()
    rec.resent.clear()
    record(store, [raised(alarm(), T0 + 1)], T0 + 1)
    rec.failures = [Retryable("down", "network")]
    clock.advance(61)
    n.step()
    assert rec.resent == []


def test_a_notifier_on_a_reopened_sqlite_store_resumes_from_its_checkpoint(
    clock: ManualClock, tmp_path: Path
) -> None:
    from faultline.store import open_store

    url = f"sqlite:///{tmp_path / 'faultline.db'}"
    store, first = open_store(url), Recorder()
    n = notifier(store, first, clock)
    n.step()
    a, b = alarm("s-1"), alarm("s-2")
    record(store, [raised(a, T0 + 1), raised(b, T0 + 1)], T0 + 10)
    clock.advance(1)
    n.step()
    record(store, [cleared(a, T0 + 2, T0 + 1)], T0 + 20)
    store.close()  # as a crash would leave it: the clear recorded, not delivered

    reopened, again = open_store(url), Recorder()
    notifier(reopened, again, clock).step()
    assert first.keys == sorted([raised(a, T0 + 1).key, raised(b, T0 + 1).key])
    assert again.keys == [cleared(a, T0 + 2, T0 + 1).key]
    reopened.close()
