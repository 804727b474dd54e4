"""Where one receiver stands in the transition log, and the order it is told things in.

The outbox is the store's transition log itself (`TransitionFeed`, in (recorded_at, key)
order). A receiver's position is a `Position`: the highest `recorded_at` it has finished with
(delivered, refused for good, or given up as too old) and the keys it finished with recorded
within `margin_ms` below that. Reading resumes `margin_ms` below the high-water mark and skips
those keys, so a transition whose commit landed after others recorded later than it (several
writers, each stamping its own clock) is still delivered, provided it lands within the margin,
and nothing finished is delivered again, except what was finished after the position was last
saved (at least once, never a gap).

The position is saved as a store Checkpoint (group "notifier", topic = the receiver's name,
partition 0, offset = the high-water mark, state = the keys as msgpack), which a store never
moves back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from faultline.schema import Checkpoint
from faultline.store.base import RecordedTransition

GROUP = "notifier"
PARTITION = 0

# A log of one batch holds its transitions under one recorded_at, ordered by key, where "clear"
# sorts before "raise": told in that order, a receiver would see an alarm clear, then fire.
# Within one recorded_at they are told in the order they happened, as AlarmHistory has it.
_RANK = {"clear": 0, "raise": 1, "escalate": 2}
_OPERATOR = 3


def told_order(item: RecordedTransition) -> tuple[int, int, int, str]:
    t = item.transition
    return (item.recorded_at, t.ts, _RANK.get(t.action, _OPERATOR), t.key)


class _State(msgspec.Struct, array_like=True):
    version: int
    done: list[tuple[str, int]]


@dataclass
class Position:
    """A receiver's place in the log (see the module docstring)."""

    high: int  # the highest recorded_at finished with (or where the receiver started)
    margin_ms: int
    done: dict[str, int] = field(default_factory=dict)  # key -> recorded_at

    @property
    def read_from(self) -> tuple[int, str]:
        """A TransitionFeed `after` that includes everything recorded at or after
        high - margin (the empty key sorts before every key)."""
        return (max(self.high - self.margin_ms, 0), "")

    def finished(self, item: RecordedTransition) -> bool:
        return item.transition.key in self.done

    def finish(self, items: Iterable[RecordedTransition]) -> None:
        for item in items:
            self.done[item.transition.key] = item.recorded_at
            self.high = max(self.high, item.recorded_at)
        floor = self.high - self.margin_ms
        self.done = {k: at for k, at in self.done.items() if at >= floor}

    def checkpoint(self, receiver: str, now_ms: int) -> Checkpoint:
        state = _State(1, sorted(self.done.items(), key=lambda kv: (kv[1], kv[0])))
        return Checkpoint(
            GROUP, receiver, PARTITION, self.high, msgspec.msgpack.encode(state), now_ms
        )

    @classmethod
    def restore(cls, checkpoint: Checkpoint, margin_ms: int) -> Position:
        state = msgspec.msgpack.decode(checkpoint.state, type=_State)
        if state.version != 1:
            raise ValueError(f"notifier checkpoint version {state.version} is not known")
        position = cls(checkpoint.offset, margin_ms, dict(state.done))
        position.finish(())  # a smaller margin than when it was saved keeps fewer keys
        return position


def split_page(
    page: Sequence[RecordedTransition], full: bool
) -> tuple[list[RecordedTransition], tuple[int, str] | None]:
    """The transitions of `page` (feed order) to tell now, in told order, and where the next
    read starts (None: the page was the end of the log).

    A full page may end inside one recorded_at whose rest comes with the next page; telling
    part of it now could break the order within it, so that recorded_at is left for the next
    read. When it fills the whole page, nothing is told and the next read starts where this
    one did: the caller reads a larger page.
    """
    if not full:
        return sorted(page, key=told_order), None
    last = page[-1].recorded_at
    keep = [item for item in page if item.recorded_at != last]
    if not keep:
        return [], None
    resume = (keep[-1].recorded_at, keep[-1].transition.key)
    return sorted(keep, key=told_order), resume
