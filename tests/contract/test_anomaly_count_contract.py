"""AnomalyCount is exact at any range boundary: whole minutes, parts of minutes, one minute's
inside, an empty range, and after replays (the SQL stores answer whole minutes from per-minute
counts and the partial minutes at the ends from the readings)."""

from __future__ import annotations

import pytest

from faultline.store import AnomalyCount, Store
from tests.contract.batches import T0, reading_frame, write_batch

MINUTE = 60_000
# Every 7 s for 10 minutes, two stations, every third reading anomalous: minutes hold uneven
# counts, and readings fall on and beside minute boundaries.
TIMES = [T0 + 7_000 * i for i in range(86)] + [T0 + MINUTE * k for k in range(1, 10)]
STATIONS = ["s-1" if i % 2 else "s-2" for i in range(len(TIMES))]
MASKS = [1 if i % 3 == 0 else 0 for i in range(len(TIMES))]
RANGES = [
    (T0, T0 + 10 * MINUTE),  # whole minutes only
    (T0 + 1, T0 + 10 * MINUTE - 1),  # a part of a minute at each end
    (T0 + 1_000, T0 + 59_000),  # inside one minute
    (T0 + 30_000, T0 + 90_000),  # one boundary, no whole minute
    (T0 + 30_000, T0 + 150_000),  # one whole minute between two parts
    (T0 + MINUTE, T0 + 2 * MINUTE),  # exactly one minute
    (T0 + 2 * MINUTE, T0 + 2 * MINUTE + 1),  # one millisecond holding a reading
    (T0 + 5 * MINUTE, T0 + 5 * MINUTE),  # empty
    (T0 + 5 * MINUTE, T0 + MINUTE),  # end before start
    (T0 - 30 * 86_400_000 + 12_345, T0 + 10 * MINUTE + 17),  # 30 days, unaligned
]


def expected(start: int, end: int) -> int:
    return sum(1 for ts, m in zip(TIMES, MASKS, strict=True) if m and start <= ts < end)


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_anomalies_are_counted_exactly_at_any_boundary(store: Store, start: int, end: int) -> None:
    frame = reading_frame(STATIONS, TIMES, seq=list(range(len(TIMES))), sensor_mask=MASKS)
    store.write(write_batch(frame.iloc[:50]))
    store.write(write_batch(frame.iloc[30:]))  # overlapping: only the new readings count
    store.write(write_batch(frame))  # a replay: nothing new

    assert store.query(AnomalyCount(start, end)) == expected(start, end)
