"""The `faultline` command. Settings are read here, once, and handed down frozen."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from faultline import __version__
from faultline.batch.cli import add_batch_parser
from faultline.clock import iso_ms
from faultline.config import Settings, load_settings
from faultline.evaluate.cli import add_eval_parser

if TYPE_CHECKING:
    from faultline.models.gate import GateResult
    from faultline.models.lifecycle import ChampionChange
    from faultline.tokens import TokenStore

log = logging.getLogger("faultline")


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    """Settings from file and environment, with command-line flags (`section__name`) on top.

    Flags are merged into their section as the file and environment produced it, so
    `--port` does not reset the rest of `[api]`.
    """
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flags.items():
        if value is not None:
            section, _, name = key.partition("__")
            sections.setdefault(section, {})[name] = value
    data_dir = getattr(args, "data_dir", None)
    base = load_settings(args.config, data_dir=data_dir)
    merged = {
        section: {**getattr(base, section).model_dump(), **values}
        for section, values in sections.items()
    }
    return load_settings(args.config, data_dir=data_dir, **merged)


def _stop_on_signals() -> threading.Event:
    """SIGINT and SIGTERM set the returned event; a second signal exits at once."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(130)
        log.info("received %s: stopping (again to force)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def cmd_up(args: argparse.Namespace) -> int:
    from faultline.api.app import create_app
    from faultline.api.server import ApiServer
    from faultline.runtime import Runtime

    settings = _settings(
        args,
        api__host=args.host,
        api__port=args.port,
        simulate__stations=args.stations,
        simulate__rate_hz=args.rate,
        simulate__seed=args.seed,
        simulate__faults_per_station_hour=args.faults_per_hour,
    )
    stop = _stop_on_signals()
    runtime = Runtime(settings)
    runtime.load_model()
    runtime.start_engine()
    runtime.start_notifier()
    if not args.no_simulator:
        runtime.start_simulator()
    runtime.start_global_anomalies()
    ctx = runtime.app_context()
    first_admin = _first_admin_token(ctx.tokens)
    runtime.start_retention()
    runtime.start_lifecycle()
    runtime.start_alarm_figures()
    server = ApiServer(create_app(ctx), settings.api.host, settings.api.port)
    server.start()
    if first_admin is not None:
        print(
            f"First admin token (shown once; create others with `faultline token create`): "
            f"{first_admin}",
            flush=True,
        )
    print(f"Faultline is running: dashboard {server.url}/  API docs {server.url}/docs", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    stop.wait()
    server.stop()
    runtime.shutdown()
    print("Faultline stopped.", flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import threading

    from faultline.alarm_figures import AlarmFigures
    from faultline.api.app import create_app
    from faultline.api.context import AppContext
    from faultline.api.server import ApiServer
    from faultline.bus import open_bus
    from faultline.clock import SystemClock
    from faultline.metrics import Metrics
    from faultline.models.lifecycle import Lifecycle
    from faultline.runtime import ensure_model, model_registry
    from faultline.store import open_store
    from faultline.tokens import TokenStore

    settings = _settings(args, api__host=args.host, api__port=args.port)
    stop = _stop_on_signals()
    registry = model_registry(settings)
    ensure_model(settings, registry)
    store = open_store(settings.store_url)
    bus = open_bus(settings.bus_url)
    metrics, clock = Metrics(), SystemClock()
    # The alarm gauges come from the store, where every engine's alarms meet: the API serves them.
    figures = AlarmFigures(store, metrics, clock)
    threading.Thread(target=figures.run, args=(stop,), name="alarm-figures", daemon=True).start()
    server = ApiServer(
        create_app(
            AppContext(
                settings=settings,
                store=store,
                bus=bus,
                metrics=metrics,
                clock=clock,
                models=registry,
                tokens=TokenStore(settings.tokens_path),
                probes={},
                # The API's model routes; the drift schedule runs with the engine (process).
                lifecycle=Lifecycle(settings, store, registry, clock),
            )
        ),
        settings.api.host,
        settings.api.port,
    )
    server.start()
    print(f"Faultline API on {server.url}/", flush=True)
    stop.wait()
    server.stop()
    bus.close()
    store.close()
    return 0


def _first_admin_token(tokens: TokenStore) -> str | None:
    """An admin token when there is no token yet, so that a fresh install can be administered."""
    from faultline.tokens import Role

    if tokens.any_active():
        return None
    secret, _info = tokens.create(Role.ADMIN, "first-admin")
    return secret


def cmd_token(args: argparse.Namespace) -> int:
    from faultline.tokens import Role, TokenStore

    settings = _settings(args)
    tokens = TokenStore(settings.tokens_path)
    try:
        if args.action == "create":
            secret, info = tokens.create(Role.parse(args.role), args.name or "")
            print(f"created {info.role.label} token {info.name!r} (id {info.id}); shown only now:")
            print(secret, flush=True)
        elif args.action == "list":
            print(f"{'id':8}  {'role':8}  {'created (UTC)':24}  {'revoked (UTC)':24}  name")
            for t in tokens.list():
                revoked = "-" if t.revoked_at is None else iso_ms(t.revoked_at)
                print(
                    f"{t.id:8}  {t.role.label:8}  {iso_ms(t.created_at):24}  {revoked:24}  {t.name}"
                )
        else:
            try:
                info = tokens.revoke(args.token)
            except LookupError as exc:
                print(f"faultline: {exc.args[0]}", file=sys.stderr)
                return 1
            print(f"revoked {info.role.label} token {info.name!r} (id {info.id})", flush=True)
    finally:
        tokens.close()
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.bus_url.startswith("memory:"):
        print(
            "faultline process needs a shared bus (the default sqlite:///DATA_DIR/bus.db, or"
            " FAULTLINE_BUS_URL=kafka://127.0.0.1:9092); with memory:// use `faultline up`",
            file=sys.stderr,
        )
        return 2
    from prometheus_client import start_http_server

    from faultline.metrics import Metrics

    stop = _stop_on_signals()
    # Either engine counts the same faultline_* metrics, served on the same address.
    metrics = Metrics()
    start_http_server(
        settings.engine.metrics_port, settings.engine.metrics_host, registry=metrics.registry
    )
    if args.engine == "spark":
        from faultline.engine.spark.job import run_spark_engine
        from faultline.runtime import Runtime

        # The Spark job writes dead letters too: this process expires them, and checks drift.
        retention = Runtime(settings, metrics=metrics, stop=stop)
        retention.start_retention()
        retention.start_lifecycle()
        try:
            run_spark_engine(
                settings,
                stop=stop,
                checkpoint_dir=args.checkpoint_dir or settings.data_dir / "spark-checkpoints",
                trigger_s=args.trigger,
                max_offsets_per_trigger=args.max_offsets_per_trigger,
                metrics=metrics,
            )
        finally:
            retention.shutdown()
        return 0

    from faultline.runtime import Runtime

    runtime = Runtime(settings, metrics=metrics, stop=stop)  # workers stop on the signal
    runtime.load_model()
    runtime.start_engine()
    runtime.start_retention()
    runtime.start_lifecycle()
    print(f"engine consuming {settings.readings_topic} from {settings.bus_url}", flush=True)
    stop.wait()
    runtime.shutdown()
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """The notifier alone (scale-out: beside the engines and the API), over the store."""
    settings = _settings(args)
    if not settings.notify.receivers:
        print(
            "faultline notify has no receiver to deliver to: configure notify.receivers (see "
            "docs/decisions/0016-notifier-outbox.md); alarms are in the API without one",
            file=sys.stderr,
        )
        return 2
    from prometheus_client import start_http_server

    from faultline.metrics import Metrics
    from faultline.runtime import Runtime

    stop = _stop_on_signals()
    metrics = Metrics()
    start_http_server(args.metrics_port, args.metrics_host, registry=metrics.registry)
    runtime = Runtime(settings, metrics=metrics, stop=stop)  # workers stop on the signal
    runtime.start_notifier()
    names = ", ".join(r.name for r in settings.notify.receivers)
    print(f"notifying {names} of alarm transitions in {settings.store_url}", flush=True)
    stop.wait()
    runtime.shutdown()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from faultline.runtime import Runtime

    settings = _settings(
        args,
        simulate__stations=args.stations,
        simulate__rate_hz=args.rate,
        simulate__seed=args.seed,
        simulate__faults_per_station_hour=args.faults_per_hour,
        simulate__station_prefix=args.station_prefix,
    )
    if settings.bus_url.startswith("memory:"):
        print(
            "faultline simulate publishes to a shared bus (the default sqlite:///DATA_DIR/bus.db, "
            "or FAULTLINE_BUS_URL=kafka://...); for a self-contained demo use `faultline up`",
            file=sys.stderr,
        )
        return 2
    stop = _stop_on_signals()
    runtime = Runtime(settings, stop=stop)  # the supervisor's workers stop on the signal
    runtime.start_simulator()
    if args.duration:
        stop.wait(args.duration)
        stop.set()
    stop.wait()
    runtime.shutdown()
    return 0


def cmd_ingest_mqtt(args: argparse.Namespace) -> int:
    from faultline.ingest.mqtt import run_mqtt_bridge

    settings = _settings(args)
    stop = _stop_on_signals()
    run_mqtt_bridge(
        settings,
        broker=args.broker,
        topic_filter=args.topic,
        stop=stop,
        qos=args.qos,
        client_id=args.client_id,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
    )
    return 0


def _utc_ms(text: str) -> int:
    """An ISO-8601 date or time as epoch ms; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def cmd_train(args: argparse.Namespace) -> int:
    from faultline.runtime import ensure_model, model_registry

    settings = _settings(args, model__n_estimators=args.n_estimators, model__seed=args.seed)
    registry = model_registry(settings)
    if args.start is None and args.end is None:
        # Simulated data trains only the first model of an empty plant.
        if registry.has_champion():
            print(
                f"faultline: {settings.model.name} already has @{settings.model.alias}; "
                "train on the plant's stored readings with --from and --to",
                file=sys.stderr,
            )
            return 2
        info = ensure_model(settings, registry)
    elif args.start is None or args.end is None:
        print("faultline: --from and --to go together", file=sys.stderr)
        return 2
    else:
        from faultline.models.training import train_on_store
        from faultline.store import open_store

        store = open_store(settings.store_url)
        try:
            info = train_on_store(settings, store, registry, args.start, args.end, args.stations)
        finally:
            store.close()
    print(
        f"registered {info.name} version {info.version} (run {info.run_id}) as @{info.alias}",
        flush=True,
    )
    return 0


def _gate_line(gate: GateResult) -> str:
    verdict = "passed" if gate.passed else "did not pass"
    return f"gate {iso_ms(gate.gated_at_ms)}: {verdict}: {gate.reason}"


def _figures_lines(gate: GateResult) -> list[str]:
    rows = [("challenger", gate.challenger_version, gate.challenger)]
    if gate.champion is not None and gate.champion_version is not None:
        rows.append(("champion", gate.champion_version, gate.champion))
    lines = [
        f"window {iso_ms(gate.window_start_ms)} .. {iso_ms(gate.window_end_ms)}",
        f"{'':10}  {'version':>7}  {'readings':>8}  {'false alarms':>12}  {'alarms':>6}  "
        f"{'faults caught':>13}  {'detection':>9}  {'matched':>7}",
    ]
    for role, version, f in rows:
        matched = "-" if f.matched_detection_rate is None else f"{f.matched_detection_rate:.1%}"
        lines.append(
            f"{role:10}  {version:>7}  {f.readings:>8}  {f.false_alarms:>12}  {f.alarms:>6}  "
            f"{f'{f.faults_caught} of {f.faults}':>13}  {f.detection_rate:>9.1%}  {matched:>7}"
        )
    return lines


def _change_line(change: ChampionChange) -> str:
    was = "nothing" if change.from_version is None else f"version {change.from_version}"
    return (
        f"{iso_ms(change.at_ms)}  {change.operation:8}  {was} -> version {change.to_version}"
        f"  by {change.actor}: {change.reason}"
    )


def cmd_models(args: argparse.Namespace) -> int:
    """The model lifecycle (models/lifecycle.py) from the command line; refusals exit 1."""
    from faultline.clock import SystemClock
    from faultline.models.champion import model_registry
    from faultline.models.lifecycle import Lifecycle, LifecycleRefused
    from faultline.models.registry import ModelNotFoundError
    from faultline.store import open_store

    settings = _settings(args)
    store = open_store(settings.store_url)
    lifecycle = Lifecycle(settings, store, model_registry(settings), SystemClock())
    reason = getattr(args, "reason", None) or "by hand"
    try:
        if args.action == "list":
            for view in lifecycle.versions():
                aliases = " ".join(f"@{a}" for a in view.aliases) or "-"
                trained = view.info.params.get("training_data", "")
                window = view.info.params.get("train_from")
                if window is not None:
                    trained += f", {window} .. {view.info.params.get('train_to')}"
                print(
                    f"version {view.info.version:>4}  {aliases:24}  run {view.info.run_id}  "
                    f"trained {iso_ms(view.info.trained_at_ms)} ({trained}); "
                    f"compiled: {view.compiled}"
                )
                print(f"      {'not gated' if view.gate is None else _gate_line(view.gate)}")
        elif args.action == "history":
            changes = lifecycle.history()
            for change in changes:
                print(_change_line(change))
            if not changes:
                print("no promotion or rollback recorded")
        elif args.action == "gate":
            gate = lifecycle.gate(args.version)
            print(f"version {gate.challenger_version} {_gate_line(gate)}")
            print("\n".join(_figures_lines(gate)))
        elif args.action == "promote":
            change = lifecycle.promote(args.version, actor="cli", reason=reason, force=args.force)
            print(_change_line(change))
        elif args.action == "rollback":
            print(_change_line(lifecycle.rollback(actor="cli", reason=reason)))
        elif args.action == "drift":
            drift = lifecycle.check_drift()
            verdict = "drift" if drift.report.drift_detected else "no drift"
            print(f"version {drift.model_version}: {verdict}: {drift.report.message}")
        else:
            print(lifecycle.check_drift_retrain(actor="cli").msg)
    except (LifecycleRefused, ModelNotFoundError) as exc:
        print(f"faultline: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _simulation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stations", type=int, help="simulated stations (default 25)")
    parser.add_argument("--rate", type=float, help="readings per second per station (default 1)")
    parser.add_argument("--seed", type=int, help="seed for a reproducible simulation")
    parser.add_argument(
        "--faults-per-hour", type=float, help="injected faults per station-hour (default 2)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faultline",
        description="Real-time anomaly detection for industrial IoT sensor streams.",
    )
    parser.add_argument("--version", action="version", version=f"faultline {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="a TOML settings file")
    common.add_argument("--data-dir", type=Path, help="where the store and models live")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(handler=handler)
        return p

    up = add("up", cmd_up, "Run simulator, engine, API and dashboard in one process.")
    _simulation_flags(up)
    up.add_argument("--host", help="API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="API port (default 8000)")
    up.add_argument("--no-simulator", action="store_true", help="ingest only via the API")

    serve = add("serve", cmd_serve, "Serve the REST API and dashboard over the store.")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    process = add("process", cmd_process, "Run the engine: consume the bus, detect, store.")
    process.add_argument(
        "--engine",
        choices=("inprocess", "spark"),
        default="inprocess",
        help="inprocess (default) or spark: Spark Structured Streaming over Kafka",
    )
    process.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="spark: checkpoints (default DATA_DIR/spark-checkpoints)",
    )
    process.add_argument("--trigger", type=float, default=1.0, help="spark: seconds per batch")
    process.add_argument(
        "--max-offsets-per-trigger", type=int, help="spark: cap on readings per micro-batch"
    )

    notify = add("notify", cmd_notify, "Deliver alarm transitions to the configured receivers.")
    notify.add_argument("--metrics-host", default="127.0.0.1", help="metrics address")
    notify.add_argument("--metrics-port", type=int, default=9109, help="metrics port (9109)")

    simulate = add("simulate", cmd_simulate, "Publish simulated station readings to the bus.")
    _simulation_flags(simulate)
    simulate.add_argument("--duration", type=float, help="stop after this many seconds")
    simulate.add_argument(
        "--station-prefix", help="station id prefix (default station_), one per replica"
    )

    ingest = sub.add_parser("ingest", help="Bridge other transports into the bus.")
    ingest_sub = ingest.add_subparsers(dest="transport", required=True, metavar="TRANSPORT")
    mqtt = ingest_sub.add_parser(
        "mqtt",
        parents=[common],
        help="Subscribe to an MQTT broker and publish every reading to the bus.",
        description="Subscribe to an MQTT broker (QoS 1, acknowledged after the bus took the "
        "reading) and publish each payload unchanged to the readings topic; the engine "
        "dead-letters what is not a reading.",
    )
    mqtt.set_defaults(handler=cmd_ingest_mqtt)
    mqtt.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="mqtt://host:port, or mqtts://host:port for TLS; credentials: FAULTLINE_MQTT__*",
    )
    mqtt.add_argument(
        "--topic", default="plant/+/readings", help="topic filter; '+' marks the station level"
    )
    mqtt.add_argument("--qos", type=int, choices=(0, 1), default=1)
    mqtt.add_argument(
        "--client-id", default="faultline-mqtt-bridge", help="MQTT client id (one per bridge)"
    )
    mqtt.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port")
    mqtt.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")

    token = sub.add_parser(
        "token", help="Create, list and revoke API tokens (only their hashes are kept)."
    )
    token.set_defaults(handler=cmd_token)
    token_sub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", parents=[common], help="print a new token once")
    create.add_argument(
        "--role",
        required=True,
        choices=("viewer", "ingest", "operator", "admin"),
        help="viewer reads; ingest also posts readings; operator also makes operational "
        "writes; admin may do everything",
    )
    create.add_argument("--name", help="what the token is for (default: role and id)")
    token_sub.add_parser("list", parents=[common], help="every token without its secret")
    revoke = token_sub.add_parser("revoke", parents=[common], help="revoke a token at once")
    revoke.add_argument("token", help="the token's id or name")

    add_eval_parser(sub, parents=[common])
    add_batch_parser(sub, parents=[common])

    train = add(
        "train",
        cmd_train,
        "Train seed 000's model on stored readings and register it as the challenger "
        "(without --from/--to: on simulated data, as the first champion of an empty plant).",
    )
    train.add_argument(
        "--from", dest="start", type=_utc_ms, help="first instant (ISO-8601, UTC if no offset)"
    )
    train.add_argument("--to", dest="end", type=_utc_ms, help="end instant, excluded")
    train.add_argument(
        "--stations", default="*", help="station ids to train on, a glob (default: all)"
    )
    train.add_argument("--n-estimators", type=int)
    train.add_argument("--seed", type=int)

    models = sub.add_parser(
        "models",
        help="The model lifecycle: versions, gate, promotion, rollback, drift.",
        description="The model lifecycle: list versions and their gates, gate a challenger "
        "against the champion, promote or roll back (recorded), check drift, or run the whole "
        "cycle (drift check, retraining, gate, promotion). Refusals exit with 1.",
    )
    models.set_defaults(handler=cmd_models)
    models_sub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    models_sub.add_parser("list", parents=[common], help="every version, newest first")
    models_sub.add_parser("history", parents=[common], help="promotions and rollbacks")
    gate = models_sub.add_parser(
        "gate", parents=[common], help="re-score recent readings with VERSION and the champion"
    )
    gate.add_argument("version")
    promote = models_sub.add_parser(
        "promote", parents=[common], help="make VERSION the champion (its gate must have passed)"
    )
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote without a passed gate")
    promote.add_argument("--reason", help="recorded with the promotion")
    rollback = models_sub.add_parser(
        "rollback", parents=[common], help="bring back the champion the current one replaced"
    )
    rollback.add_argument("--reason", help="recorded with the rollback")
    models_sub.add_parser("drift", parents=[common], help="check the champion for drift")
    models_sub.add_parser(
        "cycle", parents=[common], help="check drift; on drift retrain, gate and promote"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"faultline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
