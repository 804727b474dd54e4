"""The bridge's arguments: broker URLs, topic filters and the station level, QoS, and the CLI
entry point's refusal of a bus it cannot share. No broker needed."""

from __future__ import annotations

import threading

import pytest

from faultline.bus import MemoryBus
from faultline.config import load_settings
from faultline.ingest.mqtt import (
    BrokerAddress,
    MqttBridge,
    parse_broker_url,
    run_mqtt_bridge,
    station_level,
)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://broker.plant", BrokerAddress("broker.plant", 1883)),
        ("mqtt://mosquitto:11883/", BrokerAddress("mosquitto", 11883)),
        ("mqtts://broker.plant", BrokerAddress("broker.plant", 8883, tls=True)),
        ("mqtts://mosquitto:18883", BrokerAddress("mosquitto", 18883, tls=True)),
    ],
)
def test_a_broker_url_names_host_and_port(url: str, address: BrokerAddress) -> None:
    assert parse_broker_url(url) == address


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("127.0.0.1:1883", "want mqtt://host"),
        ("ws://broker:8883", "want mqtt://host"),
        ("mqtt://user:secret@broker", "never in a URL"),
        ("mqtts://user@broker", "FAULTLINE_MQTT__PASSWORD"),
        ("mqtt://broker/plant", "no path or options"),
        ("mqtt://broker:http", "bad port"),
    ],
)
def test_a_bad_broker_url_is_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_broker_url(url)


@pytest.mark.parametrize(
    ("topic_filter", "level"),
    [
        ("plant/+/readings", 1),
        ("+", 0),
        ("plant/hall-2/+", 2),
        ("$share/faultline/plant/+/readings", 1),
        ("plant/#", None),
        ("plant/s-01/readings", None),
        ("plant/+/+/readings", None),  # which one is the station? the payload says
    ],
)
def test_the_station_is_the_level_of_the_only_plus(topic_filter: str, level: int | None) -> None:
    assert station_level(topic_filter) == level


@pytest.mark.parametrize(
    ("topic_filter", "complaint"),
    [
        ("", "empty"),
        ("plant/s+/readings", "whole level"),
        ("plant/#/readings", "# must come last"),
        ("$share/faultline", "want \\$share/<group>/<filter>"),
        ("$share//plant/+", "want \\$share/<group>/<filter>"),
    ],
)
def test_an_invalid_topic_filter_is_refused(topic_filter: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        station_level(topic_filter)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"qos": 2}, "QoS 2"),
        ({"client_id": ""}, "client_id is required"),
        ({"receive_maximum": 0}, "receive_maximum"),
        ({"max_payload_bytes": 0}, "max_payload_bytes"),
    ],
)
def test_bridge_options_that_would_break_delivery_are_refused(
    options: dict[str, object], complaint: str
) -> None:
    kwargs: dict[str, object] = {"client_id": "bridge", "metrics": None, **options}
    with pytest.raises(ValueError, match=complaint):
        MqttBridge("mqtt://127.0.0.1", "plant/+/readings", MemoryBus(), "t", **kwargs)


def test_the_command_refuses_the_in_process_bus() -> None:
    settings = load_settings(bus_url="memory://")
    with pytest.raises(ValueError, match="needs a shared bus"):
        run_mqtt_bridge(
            settings, broker="mqtt://127.0.0.1", topic_filter="plant/+/readings",
            stop=threading.Event(),
        )  # fmt: skip
