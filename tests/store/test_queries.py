"""Query objects refuse limits no store could honour."""

from __future__ import annotations

import pytest

from faultline.store import DeadLetters, LatestAnomalies, Query, RecentReadings, StationReadings


@pytest.mark.parametrize(
    "make",
    [
        lambda limit: LatestAnomalies(limit=limit),
        lambda limit: StationReadings("s-1", 0, 1, limit=limit),
        lambda limit: DeadLetters(limit=limit),
        lambda limit: RecentReadings(limit=limit),
    ],
)
@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_below_one_is_refused(make: object, limit: int) -> None:
    with pytest.raises(ValueError, match=f"limit must be at least 1, got {limit}"):
        make(limit)  # type: ignore[operator]


def test_queries_are_frozen_values() -> None:
    q: Query[object] = LatestAnomalies(limit=3, station_id="s-1")
    assert q == LatestAnomalies(limit=3, station_id="s-1")
    assert len({q, LatestAnomalies(limit=3, station_id="s-1")}) == 1
