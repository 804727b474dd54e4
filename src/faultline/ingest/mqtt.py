"""MQTT into the bus: factory sensors speak MQTT, the engine reads the bus.

Delivery is at-least-once from broker to bus. The bridge subscribes with QoS 1 in a persistent
MQTT 5 session (a fixed client id, `clean_start=False`) and acknowledges a message to the broker
only after the bus accepted the batch it arrived in. A bridge that stops or dies before that leaves
the message with the broker, which delivers it again to the next connection of the same session;
the duplicates this can cause collide on the store's (station_id, ts, seq) key.

Payloads are forwarded byte for byte and not judged here: the engine's decoder dead-letters a bad
one with its reason, as it does for Kafka and HTTP ingest, so there is one set of rules and one
place bad input ends up. The exception is size. A payload over `max_payload_bytes` cannot be a
reading (those are ~100 bytes) and may be more than the bus carries (Kafka refuses records over
1 MB): it would be refused at every retry and wedge the bridge. Its first `max_payload_bytes`
bytes are forwarded in its place, which the engine dead-letters as truncated JSON; the bridge
counts the cut (`faultline_mqtt_truncated`) and logs the original size and topic.

Each bus record is keyed by its station, which decides its partition and so its ordering: the
topic level that the filter's one `+` stands for (`plant/+/readings`), or, when the filter has no
`+` or several, the payload's `station_id` if it decodes. The key only routes; the engine reads the
station from the payload.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import start_http_server

from faultline.bus import Bus, BusError, PublishTooLarge, Record, open_bus
from faultline.config import Settings
from faultline.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_CLIENT_ID = "faultline-mqtt-bridge"
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
_IDLE_POLL_S = 0.1  # how often an idle bridge looks at its stop event


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` (port 1883 by default)."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"unsupported MQTT broker URL {url!r}: want mqtt://host[:port]")
    if parts.username is not None or parts.path not in ("", "/") or parts.query:
        raise ValueError(
            f"MQTT broker URL {url!r}: only mqtt://host[:port] is supported "
            "(no credentials, path or options)"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MQTT broker URL {url!r}: bad port") from exc
    return BrokerAddress(parts.hostname, port or DEFAULT_PORT)


def station_level(topic_filter: str) -> int | None:
    """Which level of a delivered topic names the station: where the filter's only `+` is.

    None when the filter has no `+`, or several (then the payload has to say). A shared
    subscription `$share/<group>/<filter>` counts the levels of `<filter>`, since delivered
    topics do not carry the prefix. Invalid filters raise ValueError.
    """
    levels = topic_filter.split("/")
    if levels[0] == "$share":
        if len(levels) < 3 or not levels[1]:
            raise ValueError(
                f"invalid shared subscription {topic_filter!r}: want $share/<group>/<filter>"
            )
        levels = levels[2:]
    if not topic_filter or levels == [""]:
        raise ValueError("empty MQTT topic filter")
    for i, level in enumerate(levels):
        if ("+" in level or "#" in level) and level not in ("+", "#"):
            raise ValueError(
                f"invalid MQTT topic filter {topic_filter!r}: a wildcard must fill a whole level"
            )
        if level == "#" and i != len(levels) - 1:
            raise ValueError(f"invalid MQTT topic filter {topic_filter!r}: # must come last")
    plus = [i for i, level in enumerate(levels) if level == "+"]
    return plus[0] if len(plus) == 1 else None


class _Keyed(msgspec.Struct):
    """Just the station of a reading; msgspec skips every other field unparsed."""

    station_id: Any = None


_KEYED = msgspec.json.Decoder(_Keyed)


@dataclass(frozen=True, slots=True)
class _Received:
    connection: int  # an acknowledgement is only meaningful on the connection it came over
    mid: int
    qos: int
    topic: str
    payload: bytes


class MqttBridge:
    """Subscribes to `topic_filter` on an MQTT broker and publishes each message to `bus_topic`.

    `run` blocks until its stop event is set; connection losses are retried with exponential
    backoff (`reconnect_min_s` doubling up to `reconnect_max_s`), bus failures every
    `retry_backoff_s`, neither dropping a message.
    """

    def __init__(
        self,
        broker_url: str,
        topic_filter: str,
        bus: Bus,
        bus_topic: str,
        *,
        qos: int = 1,
        client_id: str,
        metrics: Metrics | None,
        batch_max_records: int = 1000,
        batch_max_wait_s: float = 0.05,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        publish_timeout_s: float = 10.0,
        retry_backoff_s: float = 0.5,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        keepalive_s: int = 30,
        session_expiry_s: int = 86_400,
        receive_maximum: int = 1000,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(
                f"qos {qos}: use 1 (at-least-once) or 0 (at-most-once). With QoS 2 the broker "
                "lets go of a message before the bridge could forward it, so a crash loses it"
            )
        if not client_id:
            raise ValueError("client_id is required: the broker keeps the session under it")
        if batch_max_records < 1 or max_payload_bytes < 1 or not 1 <= receive_maximum <= 65535:
            raise ValueError(
                "batch_max_records and max_payload_bytes must be positive, "
                "receive_maximum within 1..65535"
            )
        self._address = parse_broker_url(broker_url)
        self._station_level = station_level(topic_filter)
        self._topic_filter = topic_filter
        self._bus = bus
        self._bus_topic = bus_topic
        self._qos = qos
        self._client_id = client_id
        self._metrics = metrics or Metrics()
        self._batch_max_records = batch_max_records
        self._batch_max_wait_s = batch_max_wait_s
        self._max_payload_bytes = max_payload_bytes
        self._publish_timeout_s = publish_timeout_s
        self._retry_backoff_s = retry_backoff_s
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        # QoS 1 deliveries are bounded by receive_maximum; the bound on the queue holds QoS 0
        # back too, by blocking the network thread and so the broker's TCP stream.
        self._queue: queue.Queue[_Received] = queue.Queue(
            maxsize=2 * max(receive_maximum, batch_max_records)
        )
        self._ack_lock = threading.Lock()
        self._connection = 0
        self.subscribed = threading.Event()  # set while subscribed on a live connection
        self.last_error: str | None = None

    def run(self, stop: threading.Event) -> None:
        """Bridge until `stop` is set; what already arrived is forwarded before returning."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.reconnect_delay_set(*self._reconnect)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        client.connect_async(
            self._address.host,
            self._address.port,
            keepalive=self._keepalive_s,
            clean_start=False,
            properties=properties,
        )
        client.loop_start()  # paho's network thread: connects, and reconnects with backoff
        try:
            while not stop.is_set():
                batch = self._take()
                if batch:
                    self._forward(client, batch, stop)
            self._forward(client, self._drain(), stop)
        finally:
            client.disconnect()
            client.loop_stop()
            self._metrics.mqtt_connected.set(0)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.warning("MQTT broker %s refused the connection: %s", self._where(), reason)
            return
        with self._ack_lock:
            self._connection += 1
        self.last_error = None
        log.info(
            "connected to MQTT broker %s as %s (session %s)",
            self._where(),
            self._client_id,
            "resumed" if flags.session_present else "new",
        )
        # Retained messages are old readings a station left behind; replaying them at every
        # subscribe would store them again (the seed's form carries no ts to deduplicate on).
        options = SubscribeOptions(
            qos=self._qos, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND
        )
        client.subscribe(self._topic_filter, options=options)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            self.last_error = f"subscription to {self._topic_filter!r} refused: {refused[0]}"
            log.error("MQTT broker %s: %s", self._where(), self.last_error)
            return
        self.subscribed.set()
        self._metrics.mqtt_connected.set(1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Messages that came over the lost connection can no longer be acknowledged on it; their
        # packet ids may name other messages on the next one.
        with self._ack_lock:
            self._connection += 1
        self.subscribed.clear()
        self._metrics.mqtt_connected.set(0)
        if reason.is_failure:
            self.last_error = f"connection lost: {reason}"
            log.warning("lost MQTT broker %s (%s): reconnecting", self._where(), reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(
            _Received(
                self._connection, message.mid, message.qos, message.topic, bytes(message.payload)
            )
        )

    def _take(self) -> list[_Received]:
        """A batch: up to `batch_max_records`, waiting at most `batch_max_wait_s` to fill it."""
        try:
            batch = [self._queue.get(timeout=_IDLE_POLL_S)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self._batch_max_wait_s
        while len(batch) < self._batch_max_records:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    batch.append(self._queue.get(timeout=remaining))
                else:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _drain(self) -> list[_Received]:
        batch = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return batch

    def _forward(self, client: mqtt.Client, batch: list[_Received], stop: threading.Event) -> None:
        """Publish the batch to the bus, retrying while it fails, then acknowledge it."""
        if not batch:
            return
        records = [Record(self._value(m), self._key(m)) for m in batch]
        if not self._publish(records, stop):
            return  # unacknowledged: the broker delivers them again to this session
        with self._ack_lock:
            current = self._connection
            for m in batch:
                if m.qos and m.connection == current:
                    client.ack(m.mid, m.qos)
        self.last_error = None
        self._metrics.mqtt_forwarded.inc(len(batch))

    def _publish(self, records: list[Record], stop: threading.Event) -> bool:
        """Publish until the bus took all of `records`; False when stopped first.

        A batch larger than the bus ever holds is published in halves (each all or nothing),
        since retrying it whole would wedge the bridge.
        """
        while True:
            try:
                self._bus.publish(self._bus_topic, records, self._publish_timeout_s)
                return True
            except PublishTooLarge as exc:
                if len(records) > 1:
                    half = len(records) // 2
                    return self._publish(records[:half], stop) and self._publish(
                        records[half:], stop
                    )
                # One payload over what the bus holds: only a bus configured smaller than
                # max_payload_bytes does that, and every retry reports it.
                self._refused(records, exc)
            except BusError as exc:
                self._refused(records, exc)
            if stop.wait(self._retry_backoff_s):
                return False

    def _refused(self, records: list[Record], exc: BusError) -> None:
        self.last_error = f"bus refused {len(records)} records: {exc}"
        self._metrics.mqtt_bus_failures.inc()
        log.warning("%s; retrying in %g s", self.last_error, self._retry_backoff_s)

    def _value(self, message: _Received) -> bytes:
        payload = message.payload
        if len(payload) <= self._max_payload_bytes:
            return payload
        self._metrics.mqtt_truncated.inc()
        log.warning(
            "MQTT payload of %d bytes on %r is over the %d-byte limit: forwarding its head, "
            "for the engine to dead-letter",
            len(payload),
            message.topic,
            self._max_payload_bytes,
        )
        return payload[: self._max_payload_bytes]

    def _key(self, message: _Received) -> bytes | None:
        if self._station_level is not None:
            station = message.topic.split("/")[self._station_level]
            return station.encode() if station else None
        try:
            station = _KEYED.decode(message.payload).station_id
        except msgspec.DecodeError:
            return None
        return station.encode() if isinstance(station, str) and station else None

    def _where(self) -> str:
        return f"{self._address.host}:{self._address.port}"


def run_mqtt_bridge(
    settings: Settings,
    *,
    broker: str,
    topic_filter: str,
    stop: threading.Event,
    qos: int = 1,
    client_id: str = DEFAULT_CLIENT_ID,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> None:
    """`faultline ingest mqtt`: bridge `broker` into the configured bus until `stop` is set.

    Publishes to `settings.readings_topic` on `settings.bus_url`; with `metrics_port`, serves
    the bridge's Prometheus metrics on `metrics_host:metrics_port`. Raises ValueError for a
    `memory://` bus (it would keep the readings inside this process) and bad arguments.
    """
    if urlsplit(settings.bus_url).scheme == "memory":
        raise ValueError(
            "faultline ingest mqtt needs a shared bus (the default sqlite:///DATA_DIR/bus.db, or"
            " FAULTLINE_BUS_URL=kafka://host:9092):"
            " the in-process memory:// bus would keep the readings inside the bridge"
        )
    metrics = Metrics()
    bus = open_bus(settings.bus_url)
    try:
        bridge = MqttBridge(
            broker,
            topic_filter,
            bus,
            settings.readings_topic,
            qos=qos,
            client_id=client_id,
            metrics=metrics,
        )
        server = None
        if metrics_port is not None:
            server, _ = start_http_server(metrics_port, metrics_host, registry=metrics.registry)
        try:
            bridge.run(stop)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
    finally:
        bus.close()
