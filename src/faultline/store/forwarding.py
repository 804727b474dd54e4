"""A store that passes every call to another: the base of stores that change one call.

Tests inject faults with it (a store that fails its first writes, or dies after one), and
benchmarks probe with it (a store that notes when each commit returned), so each states only
the call it changes and forwards the rest unchanged.
"""

from __future__ import annotations

from faultline.schema import WriteBatch
from faultline.store.base import DeadLetterRetention, Query, R, Store


class ForwardingStore(Store):
    """Every call goes to `inner`; subclasses override the ones they change."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def write(self, batch: WriteBatch) -> None:
        self.inner.write(batch)

    def query(self, q: Query[R]) -> R:
        return self.inner.query(q)

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        return self.inner.expire(retention, now_ms)

    def close(self) -> None:
        self.inner.close()

    # `ping` stays Store's: a query through `self.query`, so a wrapper's faults reach it too.
