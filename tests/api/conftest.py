"""A served app over a real SQLite store holding a known set of readings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from faultline.clock import ManualClock
from tests.api.helpers import RUN_ID, FixedModels, Served, serve, tiny_model
from tests.contract.batches import dead_letter, reading_frame, write_batch

NOW = 1_767_229_200_000  # 2026-01-01T01:00:00Z
S01_ANOMALIES = (100, 200, 590)  # of s-01's 600 readings, one a second until NOW - 1 s


def known_readings(served: Served) -> None:
    """s-01: ok, 600 readings with 3 anomalies; s-02: silent (2 h ago, 1 anomaly);
    s-03: warming up (3 readings); s-04: anomalous (its newest reading, scored +inf)."""
    s01_ts = NOW - 600_000 + 1000 * np.arange(600)
    flags = np.isin(np.arange(600), S01_ANOMALIES)
    s02_ts = NOW - 7_200_000 + 1000 * np.arange(5)
    s03_ts = NOW - 3000 + 1000 * np.arange(3)
    s04_ts = NOW - 40_000 + 1000 * np.arange(40)
    s04_flags = np.arange(40) == 39
    s04_scores = np.column_stack([np.where(s04_flags, np.inf, 0.1), np.full(40, 0.2)])
    served.store.write(
        write_batch(
            reading_frame("s-01", s01_ts, is_anomaly=flags, model_version=RUN_ID),
            dead_letters=[dead_letter(1, received_at=NOW - 5000), dead_letter(2, received_at=NOW)],
        )
    )
    served.store.write(
        write_batch(reading_frame("s-02", s02_ts, is_anomaly=[False, False, True, False, False]))
    )
    served.store.write(write_batch(reading_frame("s-03", s03_ts, model_version=RUN_ID)))
    served.store.write(
        write_batch(
            reading_frame(
                "s-04",
                s04_ts,
                is_anomaly=s04_flags,
                sensor_mask=np.where(s04_flags, 0b110, 0),
                scores=s04_scores,
                model_version=RUN_ID,
            )
        )
    )


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("api")
    with serve(tmp, ManualClock(NOW), models=FixedModels(tiny_model())) as served:
        known_readings(served)
        yield served


@pytest.fixture(scope="module")
def client(seeded: Served) -> Iterator[httpx.Client]:
    with seeded.client() as http:
        yield http
