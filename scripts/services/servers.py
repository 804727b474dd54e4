"""The servers: how each is configured, started, probed for readiness and found by tests."""

from __future__ import annotations

import base64
import glob
import os
import pwd
import shutil
import signal
import subprocess
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import probes
from installs import apt_install, java_binary, maven_classpath
from processes import (
    DEPLOY,
    HERE,
    HOST,
    PORT_OFFSET,
    STATE,
    Process,
    ServiceError,
    log,
    render,
    require_free,
    wait_ready,
)


class Service(ABC):
    """One server (or cluster of them) with its processes, readiness probe and test endpoint."""

    ready_timeout_s = 60.0

    def __init__(self, name: str, env_var: str, procs: list[Process]) -> None:
        self.name = name
        self.env_var = env_var  # what the tests read to find this service
        self.procs = procs

    @abstractmethod
    def install(self) -> None:
        """Fetch what `start` needs: Debian packages when missing, Maven artifacts once."""

    @abstractmethod
    def launch(self) -> None:
        """Start the processes not running yet, without waiting for them to be ready."""

    def await_ready(self) -> str:
        """Wait until the server answers like a ready one; describe what answered."""
        return wait_ready(self.procs, self.probe, self.ready_timeout_s, self.name)

    @abstractmethod
    def probe(self) -> str:
        """Ask the running server the question a client would; raise when it is not ready."""

    @abstractmethod
    def endpoint(self) -> str:
        """The address clients connect to."""


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
        self.ready_timeout_s = 120.0

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

    def launch(self) -> None:
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
        logging = f"-Dlog4j2.configurationFile={DEPLOY / 'kafka' / 'log4j2.properties'}"
        to_start = [(n, p) for n, p in zip(self.nodes, self.procs, strict=True) if p.pid() is None]
        formats = []
        for node, proc in to_start:
            require_free(node.broker_port, proc.name)
            config = proc.dir / "server.properties"
            render(
                DEPLOY / "kafka" / "server.properties", config,
                node_id=node.node_id, voters=voters, host=HOST, advertised_host=HOST,
                broker_port=node.broker_port, controller_port=node.controller_port,
                log_dirs=proc.dir / "data", replication=self.replication,
                min_insync_replicas=self.min_isr,
            )  # fmt: skip
            if not (proc.dir / "data" / "meta.properties").exists():
                # A short-lived tool: a small heap and no optimising compiler start it faster.
                formats.append((proc, subprocess.Popen(
                    [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", logging,
                     "-cp", classpath, "kafka.tools.StorageTool", "format",
                     "--cluster-id", cluster_id, "--config", str(config), "--ignore-formatted"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )))  # fmt: skip
        for proc, formatting in formats:
            output, _ = formatting.communicate()
            if formatting.returncode != 0:
                raise ServiceError(f"{proc.name}: storage format failed:\n{output}")
        for _node, proc in to_start:
            proc.launch([
                java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", logging,
                "-cp", classpath, "kafka.Kafka", str(proc.dir / "server.properties"),
            ])  # fmt: skip


class Cassandra(Service):
    def __init__(self) -> None:
        super().__init__("cassandra", "FAULTLINE_TEST_CASSANDRA", [Process("cassandra")])
        self.native_port = 19042 + PORT_OFFSET
        self.storage_port = 17000 + PORT_OFFSET
        self.ready_timeout_s = 240.0

    def install(self) -> None:
        java_binary()
        maven_classpath("cassandra")

    def endpoint(self) -> str:
        return f"{HOST}:{self.native_port}"

    def probe(self) -> str:
        return f"Cassandra {probes.cassandra_release(HOST, self.native_port)} at {self.endpoint()}"

    def launch(self) -> None:
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

    def launch(self) -> None:
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

    def await_ready(self) -> str:
        ready = super().await_ready()
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
        self.ready_timeout_s = 20.0

    def install(self) -> None:
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            apt_install(["mosquitto"])

    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    def probe(self) -> str:
        probes.mqtt_connect(HOST, self.port)
        return f"Mosquitto at {self.endpoint()}"

    def launch(self) -> None:
        proc = self.procs[0]
        if proc.pid() is None:
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if not Path(binary).exists():
                raise ServiceError("Mosquitto is not installed: run `svc.py install mosquitto`")
            require_free(self.port, proc.name)
            config = proc.dir / "mosquitto.conf"
            render(DEPLOY / "mosquitto" / "mosquitto.conf", config, host=HOST, port=self.port)
            proc.launch([binary, "-c", str(config)])


class MosquittoTls(Service):
    """Mosquitto as a plant would run it: TLS with a CA of its own, a password file, and no
    anonymous clients. The CA, the server's certificate and a password for user `faultline`
    are made at the first start (openssl, mosquitto_passwd) and kept in the service directory:
    ca.crt and bridge-password are what a client needs."""

    user = "faultline"

    def __init__(self) -> None:
        super().__init__("mosquitto-tls", "FAULTLINE_TEST_MQTT_TLS", [Process("mosquitto-tls")])
        self.port = 18883 + PORT_OFFSET
        self.ready_timeout_s = 20.0

    def install(self) -> None:
        missing = [b for b in ("mosquitto", "mosquitto_passwd", "openssl") if not _found(b)]
        if missing:
            apt_install(["mosquitto", "openssl"])

    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def secrets(self) -> Path:
        return self.procs[0].dir / "secrets"

    def probe(self) -> str:
        password = (self.secrets / "bridge-password").read_text().strip()
        probes.mqtt_connect(
            HOST, self.port, ca_file=self.secrets / "ca.crt", username=self.user, password=password
        )
        return f"Mosquitto with TLS and passwords at {self.endpoint()}"

    def launch(self) -> None:
        proc = self.procs[0]
        if proc.pid() is not None:
            return
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists() or not _found("mosquitto_passwd") or not _found("openssl"):
            raise ServiceError("mosquitto or openssl missing: run `svc.py install mosquitto-tls`")
        require_free(self.port, proc.name)
        self._make_secrets()
        config = proc.dir / "mosquitto.conf"
        render(
            DEPLOY / "mosquitto" / "mosquitto-tls.conf",
            config,
            host=HOST,
            port=self.port,
            password_file=self.secrets / "passwd",
            certfile=self.secrets / "server.crt",
            keyfile=self.secrets / "server.key",
        )
        proc.launch([binary, "-c", str(config)])

    def _make_secrets(self) -> None:
        s = self.secrets
        if (s / "passwd").exists() and (s / "server.crt").exists():
            return
        script = DEPLOY / "mosquitto" / "make-secrets.sh"  # the same as for deploy/compose.yaml
        done = subprocess.run(
            ["sh", str(script), str(s), self.user, f"IP:{HOST},DNS:localhost"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ServiceError(f"{script.name} failed: {done.stderr.strip()}")
        # Started as root, Mosquitto drops to its own user before it reads these files.
        try:
            owner = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        for path in (s, s / "passwd", s / "server.key", s / "server.crt"):
            os.chown(path, owner.pw_uid, owner.pw_gid)


class Alertmanager(Service):
    """Prometheus Alertmanager (Debian's prometheus-alertmanager): its web API on loopback,
    clustering off, its data in the service directory, routing every alert to nobody, so
    tests read the alerts back through its v2 API (the notifier's receiver)."""

    binary = Path("/usr/bin/prometheus-alertmanager")

    def __init__(self) -> None:
        super().__init__("alertmanager", "FAULTLINE_TEST_ALERTMANAGER", [Process("alertmanager")])
        self.port = 19493 + PORT_OFFSET
        self.ready_timeout_s = 30.0

    def install(self) -> None:
        if not self.binary.exists():
            apt_install(["prometheus-alertmanager"])

    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def probe(self) -> str:
        probes.http_ready(f"{self.endpoint()}/-/ready")
        return f"Alertmanager at {self.endpoint()}"

    def launch(self) -> None:
        proc = self.procs[0]
        if proc.pid() is not None:
            return
        if not self.binary.exists():
            raise ServiceError("Alertmanager is not installed: run `svc.py install alertmanager`")
        require_free(self.port, proc.name)
        config = proc.dir / "alertmanager.yml"
        render(HERE / "alertmanager" / "alertmanager.yml", config)
        proc.launch([
            str(self.binary), f"--config.file={config}", f"--storage.path={proc.dir / 'data'}",
            f"--web.listen-address={HOST}:{self.port}", "--cluster.listen-address=",
        ])  # fmt: skip


def _found(binary: str) -> bool:
    return shutil.which(binary) is not None or Path("/usr/bin", binary).exists()


def all_services() -> dict[str, Service]:
    single = [KafkaNode(1, 19092 + PORT_OFFSET, 19093 + PORT_OFFSET)]
    cluster = [KafkaNode(i, 19191 + i + PORT_OFFSET, 19291 + i + PORT_OFFSET) for i in (1, 2, 3)]
    services: list[Service] = [
        Kafka("kafka", "FAULTLINE_TEST_KAFKA", single, replication=1),
        Kafka("kafka-cluster", "FAULTLINE_TEST_KAFKA_CLUSTER", cluster, replication=3),
        Cassandra(),
        Postgres(),
        Mosquitto(),
        MosquittoTls(),
        Alertmanager(),
    ]
    return {s.name: s for s in services}


def stop_all(services: list[Service]) -> None:
    """Signal every process first, then wait: the servers shut down side by side."""
    signalled = [(s, [p for p in s.procs if p.signal() is not None]) for s in services]
    for service, procs in signalled:
        for proc in procs:
            proc.wait_gone()
        if procs:
            log(f"{service.name}: stopped")
