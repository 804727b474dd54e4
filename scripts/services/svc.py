#!/usr/bin/env python3
"""Install, start, stop and check the real servers Faultline's tests and benchmarks run against.

    svc.py install [SERVICE...]   Debian packages (when missing) and Maven artifacts (first run)
    svc.py start SERVICE...       idempotent: starts what is not running, waits until ready
    svc.py stop SERVICE...|all    SIGTERM (postgres: fast shutdown), SIGKILL after a grace period
    svc.py status [SERVICE...]    one line per process; exit 1 when any is not ready
    svc.py env [SERVICE...]       `export FAULTLINE_TEST_...=...` lines for the tests
    svc.py run SERVICE... -- CMD  install and start them, run CMD with those variables set,
                                  stop what it started; without CI=true a service that fails
                                  to start is left out (its tests skip) instead of failing

Services, all on 127.0.0.1 (ports shifted by $FAULTLINE_SERVICES_PORT_OFFSET):
    kafka          one KRaft node (broker + controller), 19092       FAULTLINE_TEST_KAFKA
    kafka-cluster  three KRaft nodes, replication 3,                FAULTLINE_TEST_KAFKA_CLUSTER
                   min.insync.replicas 2, 19192-19194
    cassandra      one node, CQL on 19042                           FAULTLINE_TEST_CASSANDRA
    postgres       throwaway cluster, 15432, database faultline     FAULTLINE_TEST_POSTGRES
    mosquitto      MQTT on 11883                                    FAULTLINE_TEST_MQTT
    mosquitto-tls  MQTT over TLS with passwords, no anonymous       FAULTLINE_TEST_MQTT_TLS
                   clients, 18883 (its CA and a password in
                   $FAULTLINE_SERVICES_DIR/mosquitto-tls/secrets)
    alertmanager   Prometheus Alertmanager, v2 API on 19493,       FAULTLINE_TEST_ALERTMANAGER
                   routing alerts to nobody
State (data, logs, pid files) lives in $FAULTLINE_SERVICES_DIR (default .cache/services),
downloads in $FAULTLINE_ARTIFACTS_DIR (default .cache/artifacts) and Maven's ~/.m2.
Uses the standard library only, so it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import probes
from processes import ServiceError, log
from servers import Service, all_services, stop_all


def each(
    services: Sequence[Service], step: Callable[[Service], object], strict: bool, failed: str
) -> list[Service]:
    """The services `step` succeeded for. With `strict` the first failure raises; without, a
    failing service is reported and left out (its tests will skip)."""
    done = []
    for service in services:
        try:
            step(service)
        except ServiceError as exc:
            if strict:
                raise
            log(f"{service.name}: {failed}, its tests will skip: {exc}")
            continue
        done.append(service)
    return done


def start_all(services: Sequence[Service], strict: bool = True) -> list[Service]:
    """Launch every service, then wait for each (the JVMs boot side by side); the ready ones."""
    began = time.monotonic()
    running = {s.name for s in services if all(p.pid() is not None for p in s.procs)}

    def await_ready(service: Service) -> None:
        answer = service.await_ready()
        took = f"{time.monotonic() - began:.1f} s"
        log(f"{service.name}: ready ({'already running' if service.name in running else took}): "
            f"{answer}")  # fmt: skip

    launched = each(services, lambda s: s.launch(), strict, "NOT STARTED")
    return each(launched, await_ready, strict, "NOT READY")


def status(chosen: Sequence[Service]) -> int:
    failures = 0
    for service in chosen:
        for proc in service.procs:
            pid = proc.pid()
            print(f"{proc.name}: {'pid ' + str(pid) if pid else 'stopped'}")
        if any(p.pid() is not None for p in service.procs):
            try:
                print(f"{service.name}: ready: {service.probe()}")
                continue
            except (OSError, probes.ProbeError) as exc:
                print(f"{service.name}: not ready: {exc}")
        failures += 1
    return 1 if failures else 0


def run(chosen: Sequence[Service], command: Sequence[str]) -> int:
    """Install and start the services, run `command` with their addresses in its environment,
    then stop the ones this call started.

    A service that cannot start fails the run when CI=true; elsewhere (a laptop without Java,
    say) the command runs without that service's variable, and the tests needing it skip.
    """
    strict = os.environ.get("CI") == "true"
    already = [s for s in chosen if all(p.pid() is not None for p in s.procs)]
    installed = each(chosen, lambda s: s.install(), strict, "NOT INSTALLED")
    try:
        ready = start_all(installed, strict)
        env = {**os.environ, **{s.env_var: s.endpoint() for s in ready}}
        log(f"running: {' '.join(command)}")
        return subprocess.run(command, env=env).returncode
    finally:
        stop_all([s for s in installed if s not in already])


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args_list:
        split = args_list.index("--")
        args_list, command = args_list[:split], args_list[split + 1 :]
    services = all_services()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env", "run"])
    parser.add_argument(
        "services", nargs="*", metavar="SERVICE",
        help=f"{', '.join(services)} or all (the default, except for start and run)",
    )  # fmt: skip
    args = parser.parse_args(args_list)
    if args.command in ("start", "run") and not args.services:
        parser.error(f"{args.command} needs the services to start (or all)")
    if (args.command == "run") != bool(command):
        parser.error("run, and only run, takes a command after --")
    names = args.services or ["all"]
    if "all" in names:
        names = list(services)
    unknown = [n for n in names if n not in services]
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(services)}")
    chosen = [services[n] for n in names]

    try:
        if args.command == "install":
            for service in chosen:
                service.install()
                log(f"{service.name}: installed")
        elif args.command == "start":
            start_all(chosen)
        elif args.command == "stop":
            stop_all(chosen)
        elif args.command == "status":
            return status(chosen)
        elif args.command == "env":
            for service in chosen:
                print(f"export {service.env_var}={service.endpoint()}")
        else:
            return run(chosen, command)
    except ServiceError as exc:
        print(f"svc.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
