"""Every store expires dead letters by age and by count, the newest kept."""

from __future__ import annotations

import pytest

from faultline.store import DeadLetterCount, DeadLetterRetention, DeadLetters, Store, StoreError
from tests.contract.batches import T0, dead_letter, write_batch

DAY_MS = 86_400_000
NOW = T0 + 10 * DAY_MS


def _letters(store: Store, received: list[int], first: int = 1) -> None:
    store.write(
        write_batch(
            dead_letters=[dead_letter(first + i, received_at=at) for i, at in enumerate(received)]
        )
    )


def _sources(store: Store) -> list[str]:
    return [d.source for d in store.query(DeadLetters(limit=1000))]


def test_letters_older_than_the_age_go(store: Store) -> None:
    # Over several days, so that stores keeping letters by day lose whole days and part of one.
    received = [NOW - k * DAY_MS // 2 for k in range(8)]  # 0, 0.5, ..., 3.5 days old
    _letters(store, received)

    gone = store.expire(DeadLetterRetention(max_age_s=2 * 86_400, max_count=1000), NOW)

    assert gone == 3  # 2.5, 3 and 3.5 days old; exactly 2 days old stays
    assert _sources(store) == [f"faultline.readings/0/{n}" for n in range(1, 6)]
    assert store.query(DeadLetterCount()) == 5
    assert store.expire(DeadLetterRetention(max_age_s=2 * 86_400, max_count=1000), NOW) == 0


def test_only_the_newest_letters_within_the_count_stay(store: Store) -> None:
    received = [NOW - k * DAY_MS // 3 for k in range(7)]
    _letters(store, received)

    assert store.expire(DeadLetterRetention(max_age_s=30 * 86_400, max_count=4), NOW) == 3

    assert _sources(store) == [f"faultline.readings/0/{n}" for n in range(1, 5)]
    assert store.query(DeadLetterCount()) == 4


def test_age_and_count_together_and_a_store_goes_on_after(store: Store) -> None:
    _letters(store, [NOW - 5 * DAY_MS, NOW - 2 * DAY_MS, NOW - 1000, NOW - 500, NOW])

    gone = store.expire(DeadLetterRetention(max_age_s=3 * 86_400, max_count=2), NOW)

    assert gone == 3
    assert _sources(store) == ["faultline.readings/0/5", "faultline.readings/0/4"]
    _letters(store, [NOW + 1000], first=9)
    assert _sources(store)[0] == "faultline.readings/0/9"
    assert store.query(DeadLetterCount()) == 3
    assert store.expire(DeadLetterRetention(max_age_s=1, max_count=0), NOW + 1000) == 3
    assert store.query(DeadLetters()) == [] and store.query(DeadLetterCount()) == 0


def test_a_batch_written_again_brings_back_what_expired_and_keeps_the_rest_once(
    store: Store,
) -> None:
    _letters(store, [NOW - 1000, NOW])
    store.expire(DeadLetterRetention(max_age_s=86_400, max_count=1), NOW)

    _letters(store, [NOW - 1000, NOW])  # the same batch again: the expired letter comes back

    assert sorted(_sources(store)) == ["faultline.readings/0/1", "faultline.readings/0/2"]
    assert store.query(DeadLetterCount()) == 2


def test_a_closed_store_refuses_to_expire(store: Store) -> None:
    store.close()

    with pytest.raises(StoreError):
        store.expire(DeadLetterRetention(max_age_s=1, max_count=1), NOW)


@pytest.mark.parametrize(("age", "count"), [(0, 1), (-1, 1), (1, -1)])
def test_a_retention_needs_a_positive_age_and_a_count(age: float, count: int) -> None:
    with pytest.raises(ValueError, match="max_"):
        DeadLetterRetention(max_age_s=age, max_count=count)
