"""Runs the Spark engine in a process of its own, so a test can kill it like a crash would:

python tests/spark/run_job.py SETTINGS_JSON CHECKPOINT_DIR IVY_DIR [--writers executors]
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from faultline.config import load_settings
from faultline.engine.spark import run_spark_engine, spark_session


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("ivy_dir", type=Path)
    parser.add_argument("--trigger-s", type=float, default=0.5)
    parser.add_argument("--max-offsets", type=int, default=250)
    parser.add_argument("--writers", choices=["driver", "executors"], default="executors")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_spark_engine(
        load_settings(**json.loads(args.settings)),
        stop=stop,
        checkpoint_dir=args.checkpoint,
        trigger_s=args.trigger_s,
        max_offsets_per_trigger=args.max_offsets,
        spark=spark_session(ui_port=0, ivy_dir=args.ivy_dir),
        writers=args.writers,
    )


if __name__ == "__main__":
    main()
