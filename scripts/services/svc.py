#!/usr/bin/env python3
"""Install, start, stop and check the real servers Faultline's tests and benchmarks run against.

    svc.py install [SERVICE...]   Debian packages (when missing) and Maven artifacts (first run)
    svc.py start SERVICE...       idempotent: starts what is not running, waits until ready
    svc.py stop SERVICE...|all    SIGTERM (postgres: fast shutdown), SIGKILL after a grace period
    svc.py status [SERVICE...]    one line per process; exit 1 when any is not ready
    svc.py env [SERVICE...]       `export FAULTLINE_TEST_...=...` lines for the tests

Services, all on 127.0.0.1 (ports shifted by $FAULTLINE_SERVICES_PORT_OFFSET):
    kafka          one KRaft node (broker + controller), 19092       FAULTLINE_TEST_KAFKA
    kafka-cluster  three KRaft nodes, replication 3,                FAULTLINE_TEST_KAFKA_CLUSTER
                   min.insync.replicas 2, 19192-19194
    cassandra      one node, CQL on 19042                           FAULTLINE_TEST_CASSANDRA
    postgres       throwaway cluster, 15432, database faultline     FAULTLINE_TEST_POSTGRES
    mosquitto      MQTT on 11883                                    FAULTLINE_TEST_MQTT
State (data, logs, pid files) lives in $FAULTLINE_SERVICES_DIR (default .cache/services),
downloads in $FAULTLINE_ARTIFACTS_DIR (default .cache/artifacts) and Maven's ~/.m2.
Uses the standard library only, so it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

import probes

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("FAULTLINE_SERVICES_DIR", ROOT / ".cache" / "services")).resolve()
ARTIFACTS = Path(os.environ.get("FAULTLINE_ARTIFACTS_DIR", ROOT / ".cache" / "artifacts")).resolve()
HOST = "127.0.0.1"
# Shifts every port, so a second set of services (another checkout, svc.py's own tests) can run
# beside the first.
PORT_OFFSET = int(os.environ.get("FAULTLINE_SERVICES_PORT_OFFSET", "0"))


class ServiceError(RuntimeError):
    """A service could not be installed, started or stopped; the message says why."""


def log(message: str) -> None:
    print(f"[svc {time.strftime('%H:%M:%S')}] {message}", flush=True)


def render(template: Path, target: Path, **values: object) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    text = Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- installation -------------------------------------------------------------------------


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages, once, and only the missing ones."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise ServiceError(f"missing packages; run: sudo apt-get install -y {' '.join(packages)}")
    log(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr}")


def java_binary() -> str:
    """The JVM to run servers with: $FAULTLINE_JAVA, $JAVA_HOME/bin/java or `java`, >= 17."""
    java = os.environ.get("FAULTLINE_JAVA") or (
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
        if os.environ.get("JAVA_HOME")
        else shutil.which("java")
    )
    if not java or not Path(java).exists():
        raise ServiceError("no Java found: install a JDK >= 17 or set FAULTLINE_JAVA")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    version = out.split('"')[1] if '"' in out else "0"
    if int(version.split(".")[0]) < 17:
        raise ServiceError(f"{java} is Java {version}; Kafka 4 and Cassandra 5 need >= 17")
    return java


def maven_classpath(service: str) -> Path:
    """The jar directory for `scripts/services/<service>/pom.xml`, fetched on first use.

    The directory is named after the pom's hash, so changing a version fetches anew.
    """
    pom = HERE / service / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    lib = ARTIFACTS / f"{service}-{digest}"
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install(["maven"])
        mvn = "mvn"
    log(f"fetching {service} jars from Maven Central into {lib}")
    started = time.monotonic()
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise ServiceError(f"Maven could not fetch {service}:\n{done.stdout[-3000:]}{done.stderr}")
    (lib / ".complete").touch()
    log(f"{service} jars fetched in {time.monotonic() - started:.1f} s")
    return lib


# --- processes ----------------------------------------------------------------------------


@dataclass
class Process:
    """One server process that we start in the background and find again by its pid file."""

    name: str
    stop_signal: int = signal.SIGTERM
    grace_s: float = 30.0

    @property
    def dir(self) -> Path:
        return STATE / self.name

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    def pid(self) -> int | None:
        """The pid when the process still runs; a recycled pid does not count.

        Every command line we launch names a file under this process's state directory, so a
        stranger that inherited the pid (or a zombie, whose command line is empty) is ignored.
        """
        try:
            pid = int(self.pid_file.read_text())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        if state in ("Z", "X"):
            return None
        # Right after exec the kernel shows an empty command line for a moment.
        return pid if not cmdline or str(self.dir).encode() in cmdline else None

    def launch(self, argv: Sequence[str], user: str | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            out.flush()
            child = subprocess.Popen(
                argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, user=user,
            )  # fmt: skip
        self.pid_file.write_text(str(child.pid))

    def signal(self) -> int | None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, self.stop_signal)
        return pid

    def wait_gone(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = self.pid()
        if pid is not None:
            log(f"{self.name}: still running after {self.grace_s:g} s, SIGKILL")
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)


def wait_ready(
    procs: Sequence[Process], probe: Callable[[], str], timeout_s: float, what: str
) -> str:
    """Poll `probe` until it answers; fail at once if a process dies, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.pid() is None:
                raise ServiceError(
                    f"{proc.name} exited before {what} was ready; last lines of "
                    f"{proc.log_file}:\n{log_tail(proc.log_file)}"
                )
        try:
            return probe()
        except (OSError, probes.ProbeError) as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.log_file}\n{log_tail(p.log_file)}" for p in procs)
    raise ServiceError(f"{what} not ready after {timeout_s:g} s ({last})\n{logs}")


def require_free(port: int, owner: str) -> None:
    if probes.port_open(HOST, port):
        raise ServiceError(f"port {port} is taken by a process that is not {owner}'s")


# --- services -----------------------------------------------------------------------------


class Service(ABC):
    """One server (or cluster of them) with its processes, readiness probe and test endpoint."""

    def __init__(self, name: str, env_var: str, procs: list[Process]) -> None:
        self.name = name
        self.env_var = env_var  # what the tests read to find this service
        self.procs = procs

    @abstractmethod
    def install(self) -> None:
        """Fetch what `start` needs: Debian packages when missing, Maven artifacts once."""

    @abstractmethod
    def start(self) -> str:
        """Start the processes not running yet and wait until ready; describe what answered."""

    @abstractmethod
    def probe(self) -> str:
        """Ask the running server the question a client would; raise when it is not ready."""

    @abstractmethod
    def endpoint(self) -> str:
        """The address clients connect to."""

    def stop(self) -> None:
        signalled = [p for p in self.procs if p.signal() is not None]
        for proc in signalled:
            proc.wait_gone()
        if signalled:
            log(f"{self.name}: stopped")


@dataclass
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int


class Kafka(Service):
    """Kafka 4 in KRaft mode: every node is both broker and controller (no ZooKeeper)."""

    def __init__(self, name: str, env_var: str, nodes: list[KafkaNode], replication: int) -> None:
        super().__init__(name, env_var, [Process(f"{name}/node-{n.node_id}") for n in nodes])
        self.nodes = nodes
        self.replication = replication
        self.min_isr = min(2, replication)

    def install(self) -> None:
        java_binary()
        maven_classpath("kafka")

    def endpoint(self) -> str:
        return ",".join(f"{HOST}:{n.broker_port}" for n in self.nodes)

    def probe(self) -> str:
        expected = sorted(n.node_id for n in self.nodes)
        for node in self.nodes:
            seen = probes.kafka_brokers(HOST, node.broker_port)
            if seen != expected:
                raise probes.ProbeError(f"node {node.node_id} sees brokers {seen}")
        return f"{len(expected)} broker(s) at {self.endpoint()}"

    def start(self) -> str:
        java = java_binary()
        classpath = f"{maven_classpath('kafka')}/*"
        cluster_file = STATE / self.name / "cluster.id"
        if not cluster_file.exists():
            cluster_file.parent.mkdir(parents=True, exist_ok=True)
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            cluster_file.write_text(cluster_id)
        cluster_id = cluster_file.read_text().strip()
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        heap = os.environ.get("FAULTLINE_KAFKA_HEAP", "512m")
        for node, proc in zip(self.nodes, self.procs, strict=True):
            if proc.pid() is not None:
                continue
            require_free(node.broker_port, proc.name)
            config = proc.dir / "server.properties"
            render(
                DEPLOY / "kafka" / "server.properties", config,
                node_id=node.node_id, voters=voters, host=HOST, advertised_host=HOST,
                broker_port=node.broker_port, controller_port=node.controller_port,
                log_dirs=proc.dir / "data", replication=self.replication,
                min_insync_replicas=self.min_isr,
            )  # fmt: skip
            jvm = [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                   "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile={DEPLOY / 'kafka' / 'log4j2.properties'}",
                   "-cp", classpath]  # fmt: skip
            if not (proc.dir / "data" / "meta.properties").exists():
                formatted = subprocess.run(
                    [*jvm, "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id,
                     "--config", str(config), "--ignore-formatted"],
                    capture_output=True, text=True,
                )  # fmt: skip
                if formatted.returncode != 0:
                    raise ServiceError(
                        f"{proc.name}: storage format failed:\n{formatted.stdout}{formatted.stderr}"
                    )
            proc.launch([*jvm, "kafka.Kafka", str(config)])
        return wait_ready(self.procs, self.probe, 120, self.name)


class Cassandra(Service):
    def __init__(self) -> None:
        super().__init__("cassandra", "FAULTLINE_TEST_CASSANDRA", [Process("cassandra")])
        self.native_port = 19042 + PORT_OFFSET
        self.storage_port = 17000 + PORT_OFFSET

    def install(self) -> None:
        java_binary()
        maven_classpath("cassandra")

    def endpoint(self) -> str:
        return f"{HOST}:{self.native_port}"

    def probe(self) -> str:
        return f"Cassandra {probes.cassandra_release(HOST, self.native_port)} at {self.endpoint()}"

    def start(self) -> str:
        proc = self.procs[0]
        if proc.pid() is None:
            java = java_binary()
            lib = maven_classpath("cassandra")
            require_free(self.native_port, proc.name)
            config = proc.dir / "cassandra.yaml"
            render(
                DEPLOY / "cassandra" / "cassandra.yaml", config, host=HOST,
                storage_port=self.storage_port, native_port=self.native_port,
                data_dir=proc.dir / "data",
            )  # fmt: skip
            options = [
                line.strip()
                for line in (DEPLOY / "cassandra" / "jvm17.options").read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
            heap = os.environ.get("FAULTLINE_CASSANDRA_HEAP", "1g")
            jamm = next(lib.glob("jamm-*.jar"))
            proc.launch([
                java, f"-Xms{heap}", f"-Xmx{heap}", *options, f"-javaagent:{jamm}",
                f"-Dcassandra.config=file://{config}", "-Dcassandra-foreground=yes",
                f"-Dcassandra.storagedir={proc.dir / 'data'}",
                f"-Dcassandra.logdir={proc.dir}",
                f"-Dlogback.configurationFile={DEPLOY / 'cassandra' / 'logback.xml'}",
                # One node alone: nobody to gossip with, so do not wait for gossip to settle.
                "-Dcassandra.skip_wait_for_gossip_to_settle=0",
                "-cp", f"{lib}/*", "org.apache.cassandra.service.CassandraDaemon",
            ])  # fmt: skip
        return wait_ready(self.procs, self.probe, 240, self.name)


def postgres_bin() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[4])
    )
    return Path(candidates[-1]).parent if candidates else None


class Postgres(Service):
    """A throwaway cluster: trust auth on loopback, fsync off (its data never matters)."""

    def __init__(self) -> None:
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
        proc = Process("postgres", stop_signal=signal.SIGINT)
        super().__init__("postgres", "FAULTLINE_TEST_POSTGRES", [proc])
        self.port = 15432 + PORT_OFFSET

    def install(self) -> None:
        if postgres_bin() is None:
            apt_install(["postgresql"])

    def endpoint(self) -> str:
        return f"postgresql://faultline@{HOST}:{self.port}/faultline"

    def _bin(self) -> Path:
        found = postgres_bin()
        if found is None:
            raise ServiceError("PostgreSQL is not installed: run `svc.py install postgres`")
        return found

    def probe(self) -> str:
        psql = [str(self._bin() / "psql"), "-h", HOST, "-p", str(self.port), "-U", "faultline"]
        done = subprocess.run(
            [*psql, "-d", "postgres", "-tAc", "SHOW server_version"], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise probes.ProbeError(done.stderr.strip())
        version = done.stdout.strip()
        return f"PostgreSQL {version} at {self.endpoint()}, timescaledb {self.timescale()}"

    def timescale(self) -> str:
        share = Path(str(self._bin()).replace("/lib/", "/share/")).parent / "extension"
        return "available" if (share / "timescaledb.control").exists() else "absent"

    def start(self) -> str:
        proc = self.procs[0]
        data = proc.dir / "data"
        sockets = proc.dir / "sockets"
        # PostgreSQL refuses to run as root; as root we hand its directories to `postgres`.
        user = "postgres" if os.geteuid() == 0 else None
        if proc.pid() is None:
            bindir = self._bin()
            require_free(self.port, proc.name)
            sockets.mkdir(parents=True, exist_ok=True)
            if user is not None:
                owner = pwd.getpwnam(user)
                os.chown(proc.dir, owner.pw_uid, owner.pw_gid)
                os.chown(sockets, owner.pw_uid, owner.pw_gid)
            if not (data / "PG_VERSION").exists():
                done = subprocess.run(
                    [str(bindir / "initdb"), "-D", str(data), "-U", "faultline", "--auth=trust",
                     "-E", "UTF8", "--no-locale", "--no-sync"],
                    capture_output=True, text=True, user=user,
                )  # fmt: skip
                if done.returncode != 0:
                    raise ServiceError(f"initdb failed:\n{done.stdout}{done.stderr}")
            proc.launch(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={sockets}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                user=user,
            )  # fmt: skip
        ready = wait_ready(self.procs, self.probe, 60, self.name)
        psql = [str(self._bin() / "psql"), "-h", HOST, "-p", str(self.port), "-U", "faultline"]
        query = "SELECT 1 FROM pg_database WHERE datname = 'faultline'"
        exists = subprocess.run(
            [*psql, "-d", "postgres", "-tAc", query],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if not exists:
            subprocess.run(
                [*psql, "-d", "postgres", "-c", "CREATE DATABASE faultline"],
                capture_output=True,
                check=True,
            )
        return ready


class Mosquitto(Service):
    def __init__(self) -> None:
        super().__init__("mosquitto", "FAULTLINE_TEST_MQTT", [Process("mosquitto")])
        self.port = 11883 + PORT_OFFSET

    def install(self) -> None:
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            apt_install(["mosquitto"])

    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    def probe(self) -> str:
        probes.mqtt_connect(HOST, self.port)
        return f"Mosquitto at {self.endpoint()}"

    def start(self) -> str:
        proc = self.procs[0]
        if proc.pid() is None:
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if not Path(binary).exists():
                raise ServiceError("Mosquitto is not installed: run `svc.py install mosquitto`")
            require_free(self.port, proc.name)
            config = proc.dir / "mosquitto.conf"
            render(DEPLOY / "mosquitto" / "mosquitto.conf", config, host=HOST, port=self.port)
            proc.launch([binary, "-c", str(config)])
        return wait_ready(self.procs, self.probe, 20, self.name)


def all_services() -> dict[str, Service]:
    single = [KafkaNode(1, 19092 + PORT_OFFSET, 19093 + PORT_OFFSET)]
    cluster = [KafkaNode(i, 19191 + i + PORT_OFFSET, 19291 + i + PORT_OFFSET) for i in (1, 2, 3)]
    services: list[Service] = [
        Kafka("kafka", "FAULTLINE_TEST_KAFKA", single, replication=1),
        Kafka("kafka-cluster", "FAULTLINE_TEST_KAFKA_CLUSTER", cluster, replication=3),
        Cassandra(),
        Postgres(),
        Mosquitto(),
    ]
    return {s.name: s for s in services}


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    services = all_services()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env"])
    parser.add_argument(
        "services", nargs="*", metavar="SERVICE",
        help=f"{', '.join(services)} or all (the default, except for start)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    names = args.services or ["all"]
    if args.command == "start" and not args.services:
        parser.error("start needs the services to start (or all)")
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
            for service in chosen:
                started = time.monotonic()
                running = all(p.pid() is not None for p in service.procs)
                ready = service.start()
                took = "already running" if running else f"{time.monotonic() - started:.1f} s"
                log(f"{service.name}: ready ({took}): {ready}")
        elif args.command == "stop":
            for service in chosen:
                service.stop()
        elif args.command == "status":
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
        else:
            for service in chosen:
                print(f"export {service.env_var}={service.endpoint()}")
    except ServiceError as exc:
        print(f"svc.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
