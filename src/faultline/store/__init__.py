"""Stores, chosen by URL: `memory://`, `sqlite:///path` (later `postgresql://`, `cassandra://`)."""

from __future__ import annotations

from faultline.store.base import (
    AnomalyCount,
    DeadLetterCount,
    DeadLetterRow,
    DeadLetters,
    FaultLabels,
    LatestAnomalies,
    Query,
    ReadingPage,
    ReadingRow,
    RecentReadings,
    StationReadings,
    Stations,
    StationSummary,
    Store,
    StoreError,
)

__all__ = [
    "AnomalyCount",
    "DeadLetterCount",
    "DeadLetterRow",
    "DeadLetters",
    "FaultLabels",
    "LatestAnomalies",
    "Query",
    "ReadingPage",
    "ReadingRow",
    "RecentReadings",
    "StationReadings",
    "StationSummary",
    "Stations",
    "Store",
    "StoreError",
]
