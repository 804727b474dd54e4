"""The bridge against a Mosquitto that requires TLS and a password (svc.py's mosquitto-tls):
it connects and forwards with the right login, and is refused without one."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from faultline.bus import MemoryBus
from faultline.config import load_settings
from faultline.ingest.mqtt import BrokerLogin, MqttBridge, broker_login
from tests.ingest.conftest import BUS_TOPIC, eventually, everything_on, running
from tests.services.endpoints import require_endpoint, services_dir

USER = "faultline"


@pytest.fixture
def broker() -> str:
    return require_endpoint("FAULTLINE_TEST_MQTT_TLS")


@pytest.fixture
def secrets(broker: str) -> Path:
    return services_dir() / "mosquitto-tls" / "secrets"


@pytest.fixture
def login(secrets: Path) -> BrokerLogin:
    settings = load_settings(
        mqtt={
            "username": USER,
            "password_file": secrets / "bridge-password",
            "ca_file": secrets / "ca.crt",
        }
    )
    return broker_login(settings.mqtt)


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    made = MemoryBus()
    made.consumer(BUS_TOPIC, "inspect").close()
    yield made
    made.close()


def bridge(
    broker: str, bus: MemoryBus, prefix: str, login: BrokerLogin | None, scheme: str = "mqtts"
) -> MqttBridge:
    return MqttBridge(
        f"{scheme}://{broker}",
        f"{prefix}/+/readings",
        bus,
        BUS_TOPIC,
        client_id=f"bridge-{uuid.uuid4().hex[:8]}",
        session_expiry_s=60,
        metrics=None,
        reconnect_min_s=1,
        reconnect_max_s=1,
        login=login,
    )


def publish(broker: str, login: BrokerLogin, topic: str, payload: bytes) -> None:
    host, port = broker.rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(login.username, login.password)
    client.tls_set(ca_certs=str(login.ca_file))
    client.connect(host, int(port))
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_bridge_connects_with_its_login_over_tls_and_forwards(
    broker: str, bus: MemoryBus, login: BrokerLogin
) -> None:
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    assert login.password and login.ca_file is not None
    with running(bridge(broker, bus, prefix, login)):
        publish(broker, login, f"{prefix}/s-01/readings", b'{"temperature": 21.5}')
        eventually(lambda: len(everything_on(bus)) == 1, what="the reading on the bus")
    assert everything_on(bus)[0].key == b"s-01"


@pytest.mark.parametrize("change", ["no login", "wrong password", "no tls", "another ca"])
def test_the_broker_refuses_the_bridge_without_the_right_login(
    broker: str, bus: MemoryBus, login: BrokerLogin, change: str, tmp_path: Path
) -> None:
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    used = {
        "no login": BrokerLogin(ca_file=login.ca_file),
        "wrong password": BrokerLogin(USER, "not-the-password", login.ca_file),
        "no tls": login,
        "another ca": BrokerLogin(USER, login.password, another_ca(tmp_path)),
    }[change]
    made = bridge(broker, bus, prefix, used, "mqtt" if change == "no tls" else "mqtts")
    with running(made, subscribed=False):
        eventually(lambda: made.last_error is not None, what="the failure, reported")
        assert not made.subscribed.is_set()
        publish(broker, login, f"{prefix}/s-01/readings", b'{"temperature": 21.5}')
    expected = {
        "no login": "refused",
        "wrong password": "refused",
        "no tls": "connection lost",
        "another ca": "TLS",
    }[change]
    assert expected in (made.last_error or ""), made.last_error
    assert everything_on(bus) == []


def another_ca(tmp_path: Path) -> Path:
    """A CA of its own, which did not sign the broker's certificate."""
    key, cert = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=Some other CA", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def test_the_password_comes_from_its_file_or_its_own_variable(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\nignored\n")
    from_file = broker_login(load_settings(mqtt={"username": "u", "password_file": secret}).mqtt)
    from_env = broker_login(load_settings(mqtt={"username": "u", "password": "p"}).mqtt)
    assert (from_file.username, from_file.password) == ("u", "s3cret")
    assert from_env.password == "p"
    with pytest.raises(ValueError, match="not both"):
        load_settings(mqtt={"username": "u", "password": "p", "password_file": secret})
    with pytest.raises(ValueError, match=r"needs mqtt\.username"):
        load_settings(mqtt={"password": "p"})
    with pytest.raises(ValueError, match="cannot read"):
        broker_login(load_settings(mqtt={"username": "u", "password_file": tmp_path / "no"}).mqtt)
