"""deploy/compose.yaml cannot run here (no Docker engine), so these tests keep it honest: every
file it references exists, the native templates render for it and agree with the clients'
URLs, every FAULTLINE_* variable is a real setting, every Faultline command parses with the real
CLI, ports bind where intended, and Prometheus and Grafana point at services and metrics that
exist."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from faultline.cli import build_parser
from faultline.config import Settings, load_settings
from faultline.metrics import Metrics
from tests.services.endpoints import missing

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = "deploy/Dockerfile"
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")
# Published on every interface on purpose: the plant network's sensors publish here (TLS).
PUBLIC = {("mosquitto", 8883)}
# Secrets the operator makes before the first start (deploy/compose.yaml's header), never
# committed: ignored by deploy/.gitignore.
OPERATOR_MADE = ("mosquitto/secrets", "prometheus/secrets")
# The JMX exporter javaagent's own metrics, as 1.0.1 exported them from Kafka 4.4 and Cassandra
# 5.0 on this machine; the rules files add the server metrics.
JVM_METRICS = {
    "jvm_memory_used_bytes",
    "jvm_gc_collection_seconds_sum",
    "process_cpu_seconds_total",
}


def interpolate(value: str) -> str:
    """Compose's substitution: ${X:-default} takes the default, ${X} and ${X:?error} a stand-in
    value (they must be set to deploy), and $$ is a literal $."""

    def substitute(match: re.Match[str]) -> str:
        return match.group(3) if match.group(2) == ":-" else "stand-in"

    escaped = value.replace("$$", "\0")
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", substitute, escaped).replace("\0", "$")


def faultline_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in SERVICES.items()
        if service.get("build", {}).get("dockerfile") == DOCKERFILE
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}


def shell_script(service: dict[str, Any]) -> str | None:
    for key in ("entrypoint", "command"):
        argv = service.get(key)
        if isinstance(argv, list) and argv[:2] == ["sh", "-c"]:
            return interpolate(argv[2])
    return None


def faultline_argv(service: dict[str, Any]) -> list[str]:
    """The arguments after `faultline`, whether the image's entry point runs it or a shell."""
    script = shell_script(service)
    if script is not None:
        words = shlex.split(script)
        return words[words.index("faultline") + 1 :]
    return [interpolate(str(arg)) for arg in service.get("command", [])]


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service's Faultline process builds from its environment alone."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("FAULTLINE_")]:
            patch.delenv(name)
        for name, value in environment(service).items():
            patch.setenv(name, value)
        return load_settings()


def mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume: a named volume or a path relative to deploy/."""
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        yield source, target


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for spec in service.get("ports", []):
        ip, host, container = str(spec).split(":")
        out.append((ip, int(host), int(container)))
    return out


def listening(service: dict[str, Any]) -> set[int]:
    return {int(p) for p in service.get("expose", [])} | {c for _, _, c in published(service)}


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def agent_port(jvm_options: str) -> int:
    """The port in `-javaagent:<jar>=<port>:<config>`."""
    match = re.search(r"-javaagent:\S+?=(\d+):(\S+)", jvm_options)
    assert match, f"no JMX exporter javaagent in {jvm_options!r}"
    return int(match.group(1))


def load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render", DEPLOY / "render" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The configuration files the `configs` service writes, rendered for real."""
    out = tmp_path_factory.mktemp("configs")
    load_render().render_all(DEPLOY / "render" / "values.toml", out)
    return out


def properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if "=" in line]
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def dockerfile_stages() -> set[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    return set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE))


def test_the_deployment_has_every_part() -> None:
    wanted = {
        *KAFKA_NODES, "engine", "cassandra", "postgres", "prometheus", "grafana", "api",
        "simulator", "mosquitto", "mqtt-bridge", "notifier", "alertmanager",
    }  # fmt: skip
    assert wanted <= set(SERVICES)
    assert SERVICES["simulator"]["deploy"]["replicas"] == 25
    assert not [n for n, s in SERVICES.items() if "zookeeper" in f"{n} {s.get('image', '')}"]
    for name, service in SERVICES.items():
        if name not in faultline_services():
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_every_file_the_deployment_references_exists() -> None:
    named = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
            assert build["target"] in dockerfile_stages(), name
        for source, target in mounts(service):
            if source.removeprefix("./") in OPERATOR_MADE:
                assert Path(target).suffix == "", (name, source)
            elif source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
                assert (DEPLOY / source).is_dir() == (Path(target).suffix == ""), (name, source)
            else:
                assert source in named, f"{name}: undeclared volume {source}"


def test_the_image_copies_files_that_exist_and_are_not_ignored() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    allowed = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for sources in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
    assert 'ENTRYPOINT ["faultline"]' in text
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    known = set(extras["optional-dependencies"])
    for wanted in re.findall(r"pip install '\.\[([^\]]+)\]'", text):
        assert set(wanted.split(",")) <= known, f"pyproject.toml lacks extras for [{wanted}]"


def test_every_rendered_file_is_what_a_service_reads(rendered: Path) -> None:
    files = {
        f"/etc/faultline/{p.relative_to(rendered)}" for p in rendered.rglob("*") if p.is_file()
    }
    read = set()
    for name, service in SERVICES.items():
        text = json.dumps(service.get("command")) + json.dumps(service.get("environment"))
        paths = set(re.findall(r"/etc/faultline/[\w./-]+", text))
        if paths:
            assert ("configs", "/etc/faultline") in set(mounts(service)), name
        read |= paths
    assert read == files


def test_the_kafka_nodes_are_one_kraft_cluster_that_the_bus_url_names(rendered: Path) -> None:
    bus = urlsplit(environment(SERVICES["api"])["FAULTLINE_BUS_URL"])
    brokers = set(bus.netloc.split(","))
    advertised, ids = set(), set()
    for node in KAFKA_NODES:
        service = SERVICES[node]
        config = environment(service)["KAFKA_CONFIG"]
        props = properties(rendered / config.removeprefix("/etc/faultline/"))
        assert props["process.roles"] == "broker,controller"
        ids.add(props["node.id"])
        for voter in props["controller.quorum.voters"].split(","):
            host, port = voter.split("@")[1].split(":")
            assert host in KAFKA_NODES and int(port) in listening(SERVICES[host])
        advertised.add(props["advertised.listeners"].removeprefix("PLAINTEXT://"))
        assert props["advertised.listeners"].startswith(f"PLAINTEXT://{node}:")
        assert props["log.dirs"] in {t for s, t in mounts(service) if s == f"{node}-data"}
        assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("3", "2")
    assert ids == {"1", "2", "3"}
    assert advertised == brokers
    assert "replication=3" in bus.query


def test_cassandra_and_mosquitto_serve_where_their_clients_connect(rendered: Path) -> None:
    store = urlsplit(environment(SERVICES["api"])["FAULTLINE_STORE_URL"])
    cassandra = yaml.safe_load((rendered / "cassandra" / "cassandra.yaml").read_text())
    assert store.scheme == "cassandra"
    assert (store.hostname, store.port) == (
        cassandra["rpc_address"],
        cassandra["native_transport_port"],
    )
    assert store.hostname in SERVICES and store.port in listening(SERVICES["cassandra"])

    conf = (rendered / "mosquitto" / "mosquitto.conf").read_text()
    port = int(re.search(r"^listener (\d+) ", conf, re.MULTILINE).group(1))  # type: ignore[union-attr]
    broker = urlsplit(option(faultline_argv(SERVICES["mqtt-bridge"]), "--broker"))
    assert (broker.scheme, broker.hostname, broker.port) == ("mqtts", "mosquitto", port)
    assert port in listening(SERVICES["mosquitto"])


def test_mosquitto_wants_tls_and_passwords_and_the_bridge_has_them_from_files(
    rendered: Path,
) -> None:
    conf = dict(
        line.split(" ", 1)
        for line in (rendered / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert conf["allow_anonymous"] == "false"
    secrets_dir = {t for s, t in mounts(SERVICES["mosquitto"]) if s == "./mosquitto/secrets"}
    for key in ("password_file", "certfile", "keyfile"):
        assert Path(conf[key]).parent.as_posix() in secrets_dir, key
    env = environment(SERVICES["mqtt-bridge"])
    assert env["FAULTLINE_MQTT__USERNAME"]
    declared = COMPOSE["secrets"]
    for variable, secret in (
        ("FAULTLINE_MQTT__PASSWORD_FILE", "mqtt-bridge-password"),
        ("FAULTLINE_MQTT__CA_FILE", "mqtt-ca"),
    ):
        assert env[variable] == f"/run/secrets/{secret}"
        assert secret in SERVICES["mqtt-bridge"]["secrets"]
        assert declared[secret]["file"].removeprefix("./").startswith(OPERATOR_MADE[0])
    # No MQTT secret inside a URL, nor in the environment itself.
    broker = urlsplit(option(faultline_argv(SERVICES["mqtt-bridge"]), "--broker"))
    assert broker.username is None and broker.password is None
    assert "FAULTLINE_MQTT__PASSWORD" not in env
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert all(f"{d}/" in ignored for d in OPERATOR_MADE)


def test_every_faultline_variable_is_a_setting_and_validates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert faultline_services()
    for name, service in faultline_services().items():
        for variable in environment(service):
            field, _, nested = variable.removeprefix("FAULTLINE_").lower().partition("__")
            assert variable.startswith("FAULTLINE_") and field in Settings.model_fields, variable
            if nested:
                section = Settings.model_fields[field].annotation
                assert nested in section.model_fields, f"{name}: {variable} is no setting"  # type: ignore[union-attr]
        settings = settings_of(service, monkeypatch)
        assert settings.bus_url.startswith("kafka://"), name


def test_every_faultline_command_parses_with_the_real_cli() -> None:
    parser = build_parser()
    invalid = []
    for name, service in faultline_services().items():
        argv = faultline_argv(service)
        try:
            parser.parse_args(argv)
        except SystemExit:
            invalid.append(f"{name}: faultline {shlex.join(argv)}")
    assert not invalid, "commands the CLI does not accept:\n" + "\n".join(invalid)


def test_shell_scripts_are_valid_sh() -> None:
    for name, service in SERVICES.items():
        script = shell_script(service)
        if script is not None:
            done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
            assert done.returncode == 0, f"{name}: {done.stderr}"


def test_ports_are_published_on_loopback_except_the_mqtt_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts: list[int] = []
    for name, service in SERVICES.items():
        for ip, host, container in published(service):
            wanted = "0.0.0.0" if (name, container) in PUBLIC else "127.0.0.1"
            assert ip == wanted, f"{name} publishes {container} on {ip}"
            hosts.append(host)
    assert len(hosts) == len(set(hosts))
    api = settings_of(SERVICES["api"], monkeypatch).api
    assert api.host == "0.0.0.0"
    assert [(h, c) for _, h, c in published(SERVICES["api"])] == [(api.port, api.port)]
    assert {c for _, _, c in published(SERVICES["grafana"])} == {3000}
    assert {c for _, _, c in published(SERVICES["prometheus"])} == {9090}


def scrape_targets() -> dict[str, list[tuple[str, int, str]]]:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {}
    for job in config["scrape_configs"]:
        targets = [t for c in job["static_configs"] for t in c["targets"]]
        path = job.get("metrics_path", "/metrics")
        jobs[job["job_name"]] = [(t.split(":")[0], int(t.split(":")[1]), path) for t in targets]
    return jobs


def test_prometheus_scrapes_what_the_services_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = scrape_targets()
    for job, targets in jobs.items():
        for host, port, _ in targets:
            assert host in SERVICES, f"{job}: no service {host}"
            assert port in listening(SERVICES[host]), f"{job}: {host} does not serve {port}"

    assert jobs["faultline-api"] == [
        ("api", settings_of(SERVICES["api"], monkeypatch).api.port, "/metrics")
    ]
    engine = settings_of(SERVICES["engine"], monkeypatch).engine
    assert jobs["faultline-engine"] == [("engine", engine.metrics_port, "/metrics")]
    bridge = faultline_argv(SERVICES["mqtt-bridge"])
    assert option(bridge, "--metrics-host") == "0.0.0.0"
    assert jobs["faultline-mqtt-bridge"] == [
        ("mqtt-bridge", int(option(bridge, "--metrics-port")), "/metrics")
    ]
    notifier = faultline_argv(SERVICES["notifier"])
    assert option(notifier, "--metrics-host") == "0.0.0.0"
    assert jobs["faultline-notifier"] == [
        ("notifier", int(option(notifier, "--metrics-port")), "/metrics")
    ]
    # The notifier delivers to the Alertmanager that Prometheus sends its alerts to.
    (receiver,) = settings_of(SERVICES["notifier"], monkeypatch).notify.receivers
    assert (receiver.kind, receiver.url) == ("alertmanager", "http://alertmanager:9093")
    alerting = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["alerting"]
    assert alerting["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    kafka_port = agent_port(environment(SERVICES["kafka-1"])["KAFKA_JMX_AGENT"])
    assert jobs["kafka"] == [(node, kafka_port, "/metrics") for node in KAFKA_NODES]
    cassandra_port = agent_port(environment(SERVICES["cassandra"])["JVM_EXTRA_OPTS"])
    assert jobs["cassandra"] == [("cassandra", cassandra_port, "/metrics")]
    assert {h for h, _, p in jobs["spark-driver"] + jobs["spark-executors"]} == {"engine"}


def test_each_jmx_exporter_reads_a_rules_file_that_is_mounted() -> None:
    for name, variable in [(n, "KAFKA_JMX_AGENT") for n in KAFKA_NODES] + [
        ("cassandra", "JVM_EXTRA_OPTS")
    ]:
        agent = environment(SERVICES[name])[variable]
        jar, rules = re.search(r"-javaagent:(\S+?)=\d+:(\S+)", agent).groups()  # type: ignore[union-attr]
        targets = dict((t, s) for s, t in mounts(SERVICES[name]))
        assert targets.get(str(Path(jar).parent)) == "jmx-exporter", name
        assert (DEPLOY / targets[rules]).is_file(), name


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "faultline.json").read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def faultline_metric_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def jmx_metric_names() -> set[str]:
    """Every name the JMX exporter rules can produce: `$n` over its group's alternatives."""
    names = set(JVM_METRICS)
    for rules_file in (DEPLOY / "prometheus" / "jmx").glob("*.yaml"):
        for rule in yaml.safe_load(rules_file.read_text())["rules"]:
            groups = re.findall(r"\(([^()]*)\)", rule["pattern"])
            expanded = [rule["name"]]
            for i, group in enumerate(groups, start=1):
                expanded = [n.replace(f"${i}", alt) for n in expanded for alt in group.split("|")]
            names |= {n.lower() for n in expanded}
    return names


def test_the_dashboard_plots_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "faultline.json").read_text())
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    assert urlsplit(provisioned["url"]).hostname == "prometheus"
    assert urlsplit(provisioned["url"]).port in listening(SERVICES["prometheus"])
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == provisioned["uid"], panel["title"]

    titles = " | ".join(title for title, _ in dashboard_queries()).lower()
    for wanted in (
        "ingest rate",
        "batch latency p99",
        "anomalies by sensor",
        "dead letters by kind",
    ):
        assert wanted in titles
    rows = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert {"Kafka", "Cassandra", "JVM"} <= rows

    known = faultline_metric_names() | jmx_metric_names()
    for title, expr in dashboard_queries():
        for name in re.findall(r"\b(?:faultline|kafka|cassandra|jvm)_[a-z0-9_]+\b", expr):
            assert name in known, f"panel {title!r} plots {name}, which nothing exports"

    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "faultline.yaml").read_text()
    )["providers"][0]
    mounted = dict((t, s) for s, t in mounts(SERVICES["grafana"]))
    assert DEPLOY / mounted[provider["options"]["path"]] == DEPLOY / "./grafana/dashboards"


def test_amtool_accepts_the_alertmanager_config_and_routes_critical_alarms_to_on_call() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        missing("amtool not installed (Debian package prometheus-alertmanager)")
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # A critical alarm goes to on-call, the rest to plant management.
    routes = {
        labels: subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={config}", *labels.split()],
            capture_output=True,
            text=True,
        ).stdout.strip()
        for labels in (
            "alertname=FaultlineAlarm severity=critical",
            "alertname=FaultlineAlarm severity=low",
        )
    }
    assert list(routes.values()) == ["on-call", "plant-management"]


def test_promtool_accepts_the_config_and_every_dashboard_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool not installed (Debian package prometheus)")
    # The scrape token is the operator's secret, mounted at /run/secrets: a stand-in here.
    token = tmp_path / "api-token"
    token.write_text("fl_stand-in\n")
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "/run/secrets/prometheus-api-token" in text
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(text.replace("/run/secrets/prometheus-api-token", str(token)))
    config = subprocess.run(
        [promtool, "check", "config", str(prometheus_yml)], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_image_compiles_the_detector_kernels_where_its_user_can_read_and_write() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    cache = re.search(r"^ENV NUMBA_CACHE_DIR=(\S+)$", text, re.MULTILINE)
    assert cache, "the image must give numba a cache directory"
    build = text.index("RUN python -m faultline.detect.surprise ")
    assert text.index("pip install") < build < text.index("USER faultline")
    assert 'chown -R faultline "$NUMBA_CACHE_DIR"' in text


def test_a_process_after_compiling_ahead_compiles_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run(code: str) -> set[str]:
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
        return {p.name for p in tmp_path.rglob("*.nbc")}

    ahead = run("from faultline.detect.surprise import compile_ahead; compile_ahead()")
    assert any(name.startswith("surprise_kernel.process") for name in ahead), ahead
    # The engine's path: a batch of several stations and sensors, scored and learned. Any
    # kernel compiled for other argument types would add a file to the cache.
    engine_like = (
        "from faultline.simulate import simulate_frame;"
        "from faultline.config import DEFAULT_SENSORS;"
        "from faultline.detect.surprise import SurpriseDetector;"
        "frame, _ = simulate_frame(DEFAULT_SENSORS, 50, stations=3, seed=0);"
        "d = SurpriseDetector(list(DEFAULT_SENSORS), warmup=10);"
        "d.process(frame.iloc[:90]); d.score(frame.iloc[90:])"
    )
    assert run(engine_like) == ahead
