"""A real store that fails on purpose, to provoke the failures the batch job must record."""

from __future__ import annotations

from typing import Any

from faultline.schema import WriteBatch
from faultline.store import Query, Store, StoreError
from faultline.store.base import R
from faultline.store.forwarding import ForwardingStore


class FailingStore(ForwardingStore):
    """Passes everything to `inner`, except that the first `queries` queries of type `what`
    and the first `writes` writes raise StoreError (as a timed-out backend would)."""

    def __init__(
        self,
        inner: Store,
        *,
        what: type[Query[Any]] | None = None,
        queries: int = 0,
        writes: int = 0,
    ) -> None:
        super().__init__(inner)
        self.what = what
        self.queries = queries
        self.writes = writes

    def write(self, batch: WriteBatch) -> None:
        if self.writes > 0:
            self.writes -= 1
            raise StoreError("write failed, nothing was stored: timed out")
        self.inner.write(batch)

    def query(self, q: Query[R]) -> R:
        if type(q) is self.what and self.queries > 0:
            self.queries -= 1
            raise StoreError(f"{type(q).__name__} failed: timed out")
        return self.inner.query(q)
