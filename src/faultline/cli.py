"""The `faultline` command. Settings are read here, once, and handed down frozen."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from faultline import __version__
from faultline.batch.cli import add_batch_parser
from faultline.config import Settings, load_settings
from faultline.evaluate.cli import add_eval_parser

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
    if not args.no_simulator:
        runtime.start_simulator()
    runtime.start_global_anomalies()
    runtime.start_retention()
    server = ApiServer(create_app(runtime.app_context()), settings.api.host, settings.api.port)
    server.start()
    print(f"Faultline is running: dashboard {server.url}/  API docs {server.url}/docs", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    stop.wait()
    server.stop()
    runtime.shutdown()
    print("Faultline stopped.", flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from faultline.api.app import create_app
    from faultline.api.context import AppContext
    from faultline.api.server import ApiServer
    from faultline.bus import open_bus
    from faultline.clock import SystemClock
    from faultline.metrics import Metrics
    from faultline.runtime import ensure_model, model_registry
    from faultline.store import open_store

    settings = _settings(args, api__host=args.host, api__port=args.port)
    stop = _stop_on_signals()
    registry = model_registry(settings)
    ensure_model(settings, registry)
    store = open_store(settings.store_url)
    bus = open_bus(settings.bus_url)
    server = ApiServer(
        create_app(
            AppContext(
                settings=settings,
                store=store,
                bus=bus,
                metrics=Metrics(),
                clock=SystemClock(),
                models=registry,
                probes={},
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


def cmd_process(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.bus_url.startswith("memory:"):
        print(
            "faultline process needs a shared bus (e.g. FAULTLINE_BUS_URL=kafka://127.0.0.1:9092);"
            " with the in-process bus use `faultline up`",
            file=sys.stderr,
        )
        return 2
    stop = _stop_on_signals()
    if args.engine == "spark":
        from faultline.engine.spark.job import run_spark_engine
        from faultline.runtime import Runtime

        # The Spark job writes dead letters too: this process expires them.
        retention = Runtime(settings, stop=stop)
        retention.start_retention()
        try:
            run_spark_engine(
                settings,
                stop=stop,
                checkpoint_dir=args.checkpoint_dir or settings.data_dir / "spark-checkpoints",
                trigger_s=args.trigger,
                max_offsets_per_trigger=args.max_offsets_per_trigger,
            )
        finally:
            retention.shutdown()
        return 0

    from prometheus_client import start_http_server

    from faultline.runtime import Runtime

    runtime = Runtime(settings, stop=stop)  # the supervisor's workers stop on the signal
    start_http_server(
        settings.engine.metrics_port,
        settings.engine.metrics_host,
        registry=runtime.metrics.registry,
    )
    runtime.load_model()
    runtime.start_engine()
    runtime.start_retention()
    print(f"engine consuming {settings.readings_topic} from {settings.bus_url}", flush=True)
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
            "faultline simulate publishes to a shared bus (e.g. FAULTLINE_BUS_URL=kafka://...); "
            "for a self-contained demo use `faultline up`",
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


def cmd_train(args: argparse.Namespace) -> int:
    from faultline.runtime import model_registry, train_model

    settings = _settings(args, model__n_estimators=args.n_estimators, model__seed=args.seed)
    info = train_model(settings, model_registry(settings))
    print(
        f"registered {info.name} version {info.version} (run {info.run_id}) as @{info.alias}",
        flush=True,
    )
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
    mqtt.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    mqtt.add_argument(
        "--topic", default="plant/+/readings", help="topic filter; '+' marks the station level"
    )
    mqtt.add_argument("--qos", type=int, choices=(0, 1), default=1)
    mqtt.add_argument(
        "--client-id", default="faultline-mqtt-bridge", help="MQTT client id (one per bridge)"
    )
    mqtt.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port")
    mqtt.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")

    add_eval_parser(sub, parents=[common])
    add_batch_parser(sub, parents=[common])

    train = add("train", cmd_train, "Train seed 000's model and register it as the champion.")
    train.add_argument("--n-estimators", type=int)
    train.add_argument("--seed", type=int)
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
