"""The Spark engine's `faultline_*` metrics: the same counts as the in-process engine's for the
same messages, whether the driver or the executors write, a consumer lag from the Kafka offsets,
and, from `faultline process --engine spark` as compose runs it, served on the configured port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from faultline.metrics import Metrics
from faultline.runtime import ensure_model, model_registry
from faultline.store import open_store
from tests.services.endpoints import REPO
from tests.spark.conftest import IVY_DIR, SettingsFactory
from tests.spark.streams import (
    publish_bad_and_odd,
    publish_simulated,
    run_in_process,
    spark_engine_thread,
    wait_until,
)
from tests.store.servers import postgres_url

pytest.importorskip("pyspark", reason="pyspark not installed: pip install -e '.[spark]'")
# Spark micro-batches over a Kafka topic (and a second Spark process): minutes on a loaded machine.
pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# What the same messages must add up to in either engine; batch counts and durations differ
# with the batching, and latencies with the wall clock.
COUNTED = (
    "faultline_readings_total",
    "faultline_anomalies_total",
    "faultline_dead_letters_total",
    "faultline_ingest_to_verdict_seconds_count",
    "faultline_batch_size_sum",
)


def samples(metrics: Metrics) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }


def scraped(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def counted(values: Samples) -> Samples:
    return {key: v for key, v in values.items() if key[0] in COUNTED}


def test_the_driver_counts_what_the_in_process_engine_counts_and_the_lag_drains(
    spark: object, make_settings: SettingsFactory, bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings()
    keys = publish_simulated(settings, stations=5, ticks=200, seed=51, first_tick=50)
    bad = publish_bad_and_odd(settings, bootstrap)
    messages = len(keys) + 1 + bad  # with the flat-form reading
    metrics = Metrics()
    lag = ("faultline_consumer_lag", (("topic", settings.readings_topic),))
    readings = ("faultline_readings_total", ())
    lags: list[float] = []
    with spark_engine_thread(
        settings, tmp_path / "checkpoint", spark=spark, trigger_s=0.0,
        max_offsets_per_trigger=300, metrics=metrics,
    ) as running:  # fmt: skip

        def done() -> bool:
            now = samples(metrics)
            if lag in now:
                lags.append(now[lag])
            stored = now[readings] + sum(
                v for (name, _), v in now.items() if name == "faultline_dead_letters_total"
            )
            return not running() or (stored == messages and now.get(lag) == 0)

        wait_until(done, timeout_s=240, what=f"{messages} messages counted, lag 0",
                   status=lambda: (samples(metrics)[readings], lags[-1:]))  # fmt: skip
        assert running(), "the engine stopped by itself"
        assert samples(metrics)[("faultline_worker_up", (("worker", "engine"),))] == 1
    spark_counts = samples(metrics)
    assert spark_counts[("faultline_worker_up", (("worker", "engine"),))] == 0
    # Read 300 at a time out of a backlog: behind at first, caught up at the end.
    assert max(lags) > 0 and lags[-1] == 0
    assert spark_counts[("faultline_batches_total", ())] >= messages // 300
    assert (
        spark_counts[("faultline_batch_seconds_count", ())]
        == spark_counts[("faultline_batches_total", ())]
    )
    assert any(name == "faultline_model_info" for name, _ in spark_counts)

    reference = Metrics()
    run_in_process(settings, open_store("memory://"), messages, reference)
    assert counted(spark_counts) == counted(samples(reference))
    kinds = {
        dict(labels)["kind"]
        for (name, labels), v in spark_counts.items()
        if name == COUNTED[2] and v
    }
    assert kinds == {"malformed", "field", "range", "sensor", "time"}
    assert spark_counts[("faultline_anomalies_total", (("sensor", "temperature"),))] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_spark_process_serves_what_its_executors_counted_on_the_metrics_port(
    spark: object,
    make_settings: SettingsFactory,
    bootstrap: str,
    postgres_schema: str,
    tmp_path: Path,
) -> None:
    settings = make_settings(store_url=postgres_url(postgres_schema))
    ensure_model(settings, model_registry(settings))
    keys = publish_simulated(settings, stations=4, ticks=150, seed=52)
    bad = publish_bad_and_odd(settings, bootstrap)
    messages = len(keys) + 1 + bad
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FAULTLINE_")},
        "FAULTLINE_DATA_DIR": str(settings.data_dir),
        "FAULTLINE_BUS_URL": settings.bus_url,
        "FAULTLINE_STORE_URL": settings.store_url,
        "FAULTLINE_READINGS_TOPIC": settings.readings_topic,
        "FAULTLINE_MODEL__N_ESTIMATORS": str(settings.model.n_estimators),
        "FAULTLINE_MODEL__TRAIN_SAMPLES": str(settings.model.train_samples),
        "FAULTLINE_DETECT__WARMUP": str(settings.detect.warmup),
        "FAULTLINE_DETECT__CALIBRATING": str(settings.detect.calibrating),
        "FAULTLINE_ENGINE__METRICS_PORT": str(port),
        # The connector from the cache the test session filled, not the home directory's.
        "PYSPARK_SUBMIT_ARGS": f"--conf spark.jars.ivy={IVY_DIR} pyspark-shell",
    }
    url = f"http://127.0.0.1:{port}/metrics"
    log = (tmp_path / "process.log").open("w")
    job = subprocess.Popen(
        [sys.executable, "-m", "faultline.cli", "process", "--engine", "spark", "--trigger", "0",
         "--max-offsets-per-trigger", "400", "--checkpoint-dir", str(tmp_path / "checkpoint")],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    seen: Samples = {}

    def done() -> bool:
        nonlocal seen
        assert job.poll() is None, f"the engine exited: see {tmp_path / 'process.log'}"
        try:
            seen = scraped(url)
        except OSError:
            return False
        total = sum(v for (n, _), v in counted(seen).items() if n in COUNTED[:1] + COUNTED[2:3])
        return total == messages

    try:
        wait_until(done, timeout_s=300, what=f"{messages} messages counted at {url}",
                   status=lambda: counted(seen))  # fmt: skip
        assert seen[("faultline_worker_up", (("worker", "engine"),))] == 1
        assert ("faultline_consumer_lag", (("topic", settings.readings_topic),)) in seen
        job.send_signal(signal.SIGTERM)
        assert job.wait(120) == 0, f"see {tmp_path / 'process.log'}"
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
        log.close()

    reference = Metrics()
    run_in_process(settings, open_store("memory://"), messages, reference)
    assert counted(seen) == counted(samples(reference))
