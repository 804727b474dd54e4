"""Simulator → Kafka → Spark job → Cassandra → API: the scale-out path end to end, with verdicts
identical to the in-process engine's on the same messages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from faultline.api.app import create_app
from faultline.api.context import AppContext
from faultline.api.server import ApiServer
from faultline.bus import MemoryBus
from faultline.clock import SystemClock
from faultline.metrics import Metrics
from faultline.store import LatestAnomalies, open_store
from faultline.tokens import TokenStore
from tests.spark.conftest import SettingsFactory
from tests.spark.streams import (
    publish_simulated,
    run_in_process,
    spark_engine_thread,
    stored_counts,
    verdicts,
    wait_until,
)

pytest.importorskip("pyspark", reason="pyspark not installed: pip install -e '.[spark]'")

from tests.store.servers import (
    cassandra_keyspace,  # noqa: F401 (a fixture this test asks for)
    cassandra_store,
    cassandra_url,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_spark_into_cassandra_serves_the_in_process_verdicts_through_the_api(
    spark: SparkSession,
    make_settings: SettingsFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    cassandra_store(request).close()  # an emptied keyspace
    keyspace = request.getfixturevalue("cassandra_keyspace")
    settings = make_settings(store_url=cassandra_url(keyspace))
    keys = publish_simulated(settings, stations=4, ticks=120, seed=43)
    store = open_store(settings.store_url)
    try:
        with spark_engine_thread(
            settings, tmp_path / "checkpoint", spark=spark, trigger_s=0.0,
            max_offsets_per_trigger=200,
        ) as running:  # fmt: skip
            wait_until(
                lambda: not running() or stored_counts(store)[0] >= len(keys),
                timeout_s=240,
                what=f"{len(keys)} readings in Cassandra",
            )
        stored = verdicts(store)
        anomalous = {key for key, row in stored.items() if row[0]}
        assert anomalous, "the simulated faults should have produced anomalies"
        assert len(store.query(LatestAnomalies(limit=1000))) == len(anomalous)

        app = create_app(
            AppContext(
                settings=settings,
                store=store,
                bus=MemoryBus(),
                metrics=Metrics(),
                clock=SystemClock(),
                models=None,
                tokens=TokenStore(tmp_path / "tokens.db"),
            )
        )
        with ApiServer(app, port=0) as server:
            rows = httpx.get(f"{server.url}/api/latest_anomalies", params={"limit": 1000}).json()
            count = httpx.get(f"{server.url}/api/outliers_count", params={"time_range": "1d"})
        served = {(r["station_id"], r["ts_ms"], r["seq"]) for r in rows}
        assert served == anomalous
        assert all(r["is_outlier"] for r in rows)
        assert count.json()["outliers_count"] == len(anomalous)
    finally:
        store.close()

    reference = open_store(f"sqlite:///{tmp_path / 'in-process.db'}")
    try:
        run_in_process(settings, reference, len(keys))
        assert stored == verdicts(reference)
    finally:
        reference.close()
    assert set(stored) == set(keys)
