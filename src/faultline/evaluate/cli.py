"""`faultline eval nab|simulate|csv`: mounted by the main CLI via `add_eval_parser`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from faultline.config import Settings, load_settings
from faultline.evaluate.benchmark import NabRun, run_nab, write_results
from faultline.evaluate.classification import Classification, classify
from faultline.evaluate.detectors import DEFAULT_DETECTOR, EVAL_DETECTORS, eval_detector
from faultline.evaluate.labelled_csv import read_labelled_csvs
from faultline.evaluate.nab import PROFILES, default_root, load_corpus
from faultline.evaluate.replay import readings_frame, replay_after_training
from faultline.evaluate.simulated import SimulationRun, SimulationSetup, run_simulation
from faultline.simulate import FaultKind

PUBLISHED_BEST = "ARTime 74.9 / 65.1 / 80.4 (published best, NAB scoreboard)"


def add_eval_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """Add `eval` with its `nab`, `simulate` and `csv` sources; each sets `handler`."""
    text = "Measure detection quality on labelled data (NAB, the simulator, any labelled CSV)."
    parser = subparsers.add_parser("eval", help=text, description=text)
    sources = parser.add_subparsers(dest="eval_source", required=True, metavar="SOURCE")
    detectors = ", ".join(f"{d.name} ({d.summary})" for d in EVAL_DETECTORS.values())
    chosen = (
        f"default {DEFAULT_DETECTOR}: the deployed set, built from the same settings "
        "(--config, FAULTLINE_*) as the engine"
    )

    text = "Score a detector on the Numenta Anomaly Benchmark (58 series, 116 windows)."
    nab = sources.add_parser("nab", parents=list(parents), help=text, description=text)
    nab.add_argument("--data", type=Path, help="the NAB corpus (default: ../shared/nab)")
    nab.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=sorted(EVAL_DETECTORS),
        help=f"{chosen}; one of: {detectors}",
    )
    nab.add_argument("--json", action="store_true", help="print only a JSON object of scores")
    nab.add_argument("--out", type=Path, help="write NAB-layout CSVs, PNGs and a summary here")
    nab.set_defaults(handler=cmd_eval_nab)

    text = (
        "Score a detector on the simulator's labelled faults, one run per fault kind: "
        "event-wise precision, recall, F1, detection delay, false alarms per station-day."
    )
    sim = sources.add_parser("simulate", parents=list(parents), help=text, description=text)
    d = SimulationSetup()
    sim.add_argument("--stations", type=int, default=d.stations, help=f"default {d.stations}")
    sim.add_argument("--hours", type=float, default=d.hours, help=f"per kind, default {d.hours}")
    sim.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    sim.add_argument(
        "--faults-per-hour",
        type=float,
        default=d.faults_per_station_hour,
        help=f"faults per station-hour, default {d.faults_per_station_hour}",
    )
    sim.add_argument(
        "--grace",
        type=int,
        default=d.grace,
        help=f"readings after a fault's end in which an alarm still detects it (default {d.grace})",
    )
    sim.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=sorted(EVAL_DETECTORS),
        help=chosen,
    )
    sim.add_argument(
        "--coupled",
        action="store_true",
        help="stations whose sensors follow their machine's load (config.COUPLED_SENSORS), "
        "with the relation faults (decouple, reversed) that no single sensor shows",
    )
    sim.add_argument("--json", action="store_true", help="print only a JSON object of results")
    sim.add_argument("--out", type=Path, help="write the JSON results here as simulate.json")
    sim.set_defaults(handler=cmd_eval_simulate)

    text = "Score a detector on labelled CSV files (metrics pooled over all files' rows)."
    csv = sources.add_parser("csv", parents=list(parents), help=text, description=text)
    csv.add_argument("files", nargs="+", type=Path, metavar="FILE")
    csv.add_argument("--time-column", required=True)
    csv.add_argument("--label-column", required=True)
    csv.add_argument("--sep", default=",", help="field separator (default ',')")
    columns = csv.add_mutually_exclusive_group()
    columns.add_argument(
        "--features",
        type=_names,
        help="comma-separated feature columns (default: every numeric column but time and label)",
    )
    columns.add_argument(
        "--ignore",
        type=_names,
        default=[],
        help="comma-separated columns that are neither features nor the label",
    )
    csv.add_argument(
        "--train-rows",
        type=int,
        default=0,
        help="the first N rows of each file fit/warm the detector and are not scored",
    )
    csv.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=sorted(EVAL_DETECTORS),
        help=chosen,
    )
    csv.add_argument(
        "--json",
        action="store_true",
        help="print only a JSON object of metrics: pooled at the top, per file under 'files'",
    )
    csv.set_defaults(handler=cmd_eval_csv)
    return parser


def _eval_settings(args: argparse.Namespace) -> Settings:
    """The settings the engine would read: the --config file, FAULTLINE_* and the defaults."""
    return load_settings(getattr(args, "config", None))


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated column names")
    return names


def cmd_eval_nab(args: argparse.Namespace) -> int:
    root = args.data or default_root()
    if root is None:
        raise FileNotFoundError("NAB corpus not found: pass --data or set FAULTLINE_SHARED")
    corpus = load_corpus(Path(root))
    run = run_nab(corpus, eval_detector(args.detector, _eval_settings(args)))
    if args.out:
        write_results(run, corpus, args.out)
    if args.json:
        print(json.dumps(run.summary()))
    else:
        print(nab_table(run, len(corpus.files), corpus.windows))
        if args.out:
            print(f"results written to {args.out}")
    return 0


def nab_table(run: NabRun, files: int, windows: int) -> str:
    lines = [
        f"NAB: {files} series, {windows} windows; detector {run.detector}; "
        f"{run.readings:,} readings replayed in {run.seconds:.1f} s "
        f"({run.readings / max(run.seconds, 1e-9):,.0f}/s)",
        f"{'profile':<20} {'score':>7} {'threshold':>10} {'detected':>9} {'missed':>7} "
        f"{'false pos.':>10}",
    ]
    for name in PROFILES:
        r = run.results[name]
        lines.append(
            f"{name:<20} {r.score:7.2f} {r.threshold:10.4g} "
            f"{sum(f.detected_windows for f in r.files):9d} "
            f"{sum(f.missed_windows for f in r.files):7d} "
            f"{sum(f.false_positives for f in r.files):10d}"
        )
    lines.append(PUBLISHED_BEST)
    return "\n".join(lines)


def cmd_eval_simulate(args: argparse.Namespace) -> int:
    from faultline.api.station_routes import silent_after_ms  # the API's rule, loaded when used
    from faultline.config import COUPLED_SENSORS, SimulateSettings

    interval_ms = SimulationSetup().interval_ms
    setup = SimulationSetup(
        stations=args.stations,
        hours=args.hours,
        seed=args.seed,
        faults_per_station_hour=args.faults_per_hour,
        grace=args.grace,
        interval_ms=interval_ms,
        silent_ms=silent_after_ms(Settings(simulate=SimulateSettings(rate_hz=1000 / interval_ms))),
    )
    settings = _eval_settings(args)
    sensors = COUPLED_SENSORS if args.coupled else settings.sensors
    run = run_simulation(eval_detector(args.detector, settings), setup, sensors=sensors)
    document = run.as_json()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "simulate.json").write_text(json.dumps(document, indent=2))
    if args.json:
        print(json.dumps(document))
    else:
        print(simulate_table(run))
        if args.out:
            print(f"results written to {args.out / 'simulate.json'}")
    return 0


def simulate_table(run: SimulationRun) -> str:
    s = run.setup
    lines = [
        f"Simulator: {s.stations} stations x {s.hours:g} h at {1000 / s.interval_ms:g} Hz per "
        f"fault kind, {s.faults_per_station_hour:g} faults/station-hour, seed {s.seed}; "
        f"detector {run.detector}; grace {s.grace} readings",
        f"{'kind':<24}{'events':>7}{'found':>7}{'alarms':>7}{'prec.':>7}{'recall':>7}"
        f"{'F1':>7}{'delay med':>10}{'p95':>6}",
    ]
    rows = [(name, k.score) for name, k in run.kinds.items()]
    if FaultKind.DROPOUT.value in run.kinds:
        rows.append(("dropout (station health)", run.station_health))
    for name, e in rows:
        lines.append(
            f"{name:<24}{e.events:>7}{e.detected:>7}{e.alarms:>7}{_show(e.precision):>7}"
            f"{_show(e.recall):>7}{_show(e.f1):>7}{_show(e.delay(0.5), 1):>10}"
            f"{_show(e.delay(0.95), 1):>6}"
        )
    lines.append(
        f"false alarms: {run.false_alarms} in {run.station_days:.2f} station-days = "
        f"{run.false_alarms_per_station_day:.2f} per station-day"
    )
    lines.append(
        f"{run.readings:,} readings through the detector in {run.seconds:.1f} s "
        f"({run.readings_per_s:,.0f} readings/s)"
    )
    return "\n".join(lines)


def _show(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cmd_eval_csv(args: argparse.Namespace) -> int:
    if args.train_rows < 0:
        raise ValueError(f"--train-rows must be >= 0, got {args.train_rows}")
    labelled = read_labelled_csvs(
        args.files, args.time_column, args.label_column, args.sep, args.features, args.ignore
    )
    sensors = sorted({c for item in labelled for c in item.series.values.columns})
    spec = eval_detector(args.detector, _eval_settings(args))
    heads = [item.series.head(args.train_rows) for item in labelled]
    detector = spec.build(sensors, readings_frame(heads, sensors))
    scored = replay_after_training(detector, [item.series for item in labelled], args.train_rows)
    labels = [item.labels[args.train_rows :] for item in labelled]
    flagged = [s.is_anomaly for s in scored]
    result = classify(labels, flagged)
    if result.counts.tp + result.counts.fp + result.counts.fn + result.counts.tn == 0:
        raise ValueError("no rows left to score after --train-rows")
    per_file = {
        item.series.name: classify([lab], [flg])
        for item, lab, flg in zip(labelled, labels, flagged, strict=True)
    }
    if args.json:
        files = {name: r.as_json() for name, r in per_file.items()}
        print(json.dumps({**result.as_json(), "files": files}))
    else:
        print(csv_table(result, per_file, args.detector, sensors))
    return 0


def csv_table(
    result: Classification,
    per_file: dict[str, Classification],
    detector: str,
    sensors: list[str],
) -> str:
    c = result.counts

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    width = max(8, *(len(name) for name in per_file))
    lines = [
        f"{len(per_file)} file(s), features {', '.join(sensors)}; detector {detector}",
        f"scored rows {c.tp + c.fp + c.fn + c.tn:,}: anomalous {c.tp + c.fn:,}, "
        f"flagged {c.tp + c.fp:,}; events {c.events} (found {c.events_found}), "
        f"alarms {c.alarms} (true {c.alarms_true})",
        f"{'file':<{width}} {'far':>7} {'detect':>7} {'f1_point':>9} {'f1_event':>9}",
    ]
    for name, r in [*per_file.items(), ("pooled", result)]:
        lines.append(
            f"{name:<{width}} {show(r.far):>7} {show(r.detection_rate):>7} "
            f"{show(r.f1_point):>9} {show(r.f1_event):>9}"
        )
    lines.append(
        f"pooled: f1_point {show(result.f1_point)}  f1_event {show(result.f1_event)}  "
        f"far {show(result.far)}  mar {show(result.mar)}"
    )
    return "\n".join(lines)
