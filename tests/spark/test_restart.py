"""The Spark engine killed mid-stream (SIGKILL to its whole process group: driver JVM and Python
workers) and restarted from its checkpoint: every published reading stored exactly once, with
the verdicts the in-process engine gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from faultline.runtime import ensure_model, model_registry
from faultline.store import open_store
from tests.services.endpoints import REPO
from tests.spark.conftest import IVY_DIR, SettingsFactory
from tests.spark.streams import (
    publish_simulated,
    run_in_process,
    spark_engine_thread,
    stored_counts,
    verdicts,
    wait_until,
)

BATCH = 250


def test_a_killed_job_resumes_from_its_checkpoint_without_loss_or_duplicates(
    spark: object, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    ensure_model(settings, model_registry(settings))
    keys = publish_simulated(settings, stations=6, ticks=300, seed=21)
    total = len(keys)
    checkpoint = tmp_path / "checkpoint"
    store = open_store(settings.store_url)
    log = (tmp_path / "job.log").open("w")
    job = subprocess.Popen(
        [
            sys.executable, str(Path(__file__).with_name("run_job.py")),
            settings.model_dump_json(), str(checkpoint), str(IVY_DIR), "--writers", "executors",
            "--max-offsets", str(BATCH),
        ],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: job.poll() is not None or stored_counts(store)[0] >= BATCH,
            timeout_s=240,
            what="the first micro-batch of the job to be stored",
        )
        assert job.poll() is None, f"the job exited: see {tmp_path / 'job.log'}"
        time.sleep(0.3)  # into a later micro-batch
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
        log.close()
    at_kill = stored_counts(store)[0]
    assert 0 < at_kill < total, f"killed at {at_kill} of {total}: not mid-stream"

    with spark_engine_thread(
        settings, checkpoint, spark=spark, trigger_s=0.0, writers="executors",
    ) as running:  # fmt: skip
        wait_until(
            lambda: not running() or stored_counts(store)[0] >= total,
            timeout_s=240,
            what=f"all {total} readings after the restart",
        )
    stored = verdicts(store)
    # The stations' counters grow by the rows a write inserts: a replay must not count twice.
    assert stored_counts(store) == (total, 0)
    store.close()
    assert len(keys) == len(set(keys)) == len(stored)
    assert set(stored) == set(keys)

    reference = open_store(f"sqlite:///{tmp_path / 'in-process.db'}")
    run_in_process(settings, reference, total)
    assert stored == verdicts(reference)
    reference.close()
