"""Notifications of alarm transitions (docs/decisions/0016).

The outbox is the store's transition log: a `Notifier` per receiver reads it on a cursor saved
in the store, and delivers every transition at least once, in order, with its key as the
idempotency key, to a signed webhook or to Prometheus Alertmanager (`receivers`), retrying a
receiver that is down with exponential backoff and jitter. `faultline up` runs one supervised
worker per configured receiver (faultline.runtime).
"""

from faultline.notify.http import Rejected, Retryable, sign, verify
from faultline.notify.notifier import Backoff, Notifier, build_notifiers
from faultline.notify.receivers import (
    AlertmanagerReceiver,
    Receiver,
    WebhookReceiver,
    build_receiver,
)

__all__ = [
    "AlertmanagerReceiver",
    "Backoff",
    "Notifier",
    "Receiver",
    "Rejected",
    "Retryable",
    "WebhookReceiver",
    "build_notifiers",
    "build_receiver",
    "sign",
    "verify",
]
