"""`faultline batch global-anomalies`: mounted by the main CLI via `add_batch_parser`.

The job's modules (statsmodels among them) are imported when the command runs, not when the
CLI starts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date

from faultline.batch.days import DAY_EXAMPLE, parse_day, previous_day
from faultline.clock import SystemClock


def add_batch_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """Add `batch` with its `global-anomalies` job; it sets `handler` (args -> exit code)."""
    text = "Batch jobs over what the stream stored."
    parser = subparsers.add_parser("batch", help=text, description=text)
    jobs = parser.add_subparsers(dest="batch_job", required=True, metavar="JOB")

    text = (
        "Seasonal Hybrid ESD over each station's and sensor's 1-minute means of one UTC day; "
        "stores the anomalies with a record of the run (running a day again replaces its "
        "results) and prints what the record says. Exits 1 when the run failed."
    )
    job = jobs.add_parser("global-anomalies", parents=list(parents), help=text, description=text)
    job.add_argument(
        "--day", type=_day, help=f"the UTC day, YYYY-MM-DD (e.g. {DAY_EXAMPLE}; default yesterday)"
    )
    job.add_argument(
        "--period-minutes", type=int, default=60, help="minutes per seasonal cycle (default 60)"
    )
    job.add_argument("--alpha", type=float, default=0.05, help="significance (default 0.05)")
    job.add_argument(
        "--max-anomalies",
        type=float,
        default=0.02,
        help="at most this fraction of a series' minutes are anomalies (default 0.02)",
    )
    job.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object: run (the record), anomalies, skipped",
    )
    job.set_defaults(handler=cmd_global_anomalies)
    return parser


def cmd_global_anomalies(args: argparse.Namespace) -> int:
    from faultline.batch.global_anomalies import GlobalAnomalyRunFailed, run_global_anomalies
    from faultline.batch.shesd import ShesdParams
    from faultline.config import load_settings
    from faultline.schema import RUN_SUCCEEDED
    from faultline.store import open_store

    params = ShesdParams(args.period_minutes, args.alpha, args.max_anomalies)
    settings = load_settings(args.config, data_dir=args.data_dir)
    day = args.day or previous_day(SystemClock().now_ms())
    store = open_store(settings.store_url)
    try:
        report = run_global_anomalies(settings, store, day, params=params)
    except GlobalAnomalyRunFailed as failed:
        report = failed.report
    finally:
        store.close()
    if args.json:
        print(json.dumps(asdict(report), default=_json_value))
    else:
        print(report.summary())
    return 0 if report.run.status == RUN_SUCCEEDED else 1


def _json_value(value: object) -> str:
    if isinstance(value, date):  # and datetime, which is one
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _day(text: str) -> date:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
