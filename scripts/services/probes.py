"""Readiness probes that speak each server's own protocol, with the standard library only.

An open port is not readiness: a Kafka node listens before it has joined the cluster, Cassandra
opens its CQL port before the system keyspace is readable. Each probe asks the question a client
would, so `svc.py` (run by any Python 3.11, before the project's virtualenv exists) needs no
client libraries.
"""

from __future__ import annotations

import socket
import ssl
import struct
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 3.0


class ProbeError(RuntimeError):
    """The server answered, but not what a ready server answers."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProbeError("connection closed mid-answer")
        chunks += chunk
    return bytes(chunks)


def kafka_brokers(host: str, port: int) -> list[int]:
    """Node ids of the live, unfenced brokers this node knows about (Metadata v4)."""
    client = b"faultline-svc"
    # Request header v1: api_key 3 (Metadata), version 4, correlation id, client id; then the
    # body: an empty topic list (brokers only) and allow_auto_topic_creation=false.
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">i?", 0, False)
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        answer = _recv_exact(sock, size)
    # correlation id, throttle_time_ms, then the broker array.
    pos = 8
    (count,) = struct.unpack_from(">i", answer, pos)
    pos += 4
    nodes = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", answer, pos)
        pos += 6 + host_len + 4  # node id, host, port
        (rack_len,) = struct.unpack_from(">h", answer, pos)
        pos += 2 + max(rack_len, 0)
        nodes.append(node_id)
    return sorted(nodes)


def _cql_frame(opcode: int, body: bytes, stream: int) -> bytes:
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def _cql_read(sock: socket.socket) -> tuple[int, bytes]:
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", _recv_exact(sock, 9))
    return opcode, _recv_exact(sock, length)


def _cql_string(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from(">h", data, pos)
    return data[pos + 2 : pos + 2 + size].decode(), pos + 2 + size


def cassandra_release(host: str, port: int) -> str:
    """`SELECT release_version FROM system.local` over CQL native protocol v4."""
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        startup = struct.pack(">hh", 1, 11) + b"CQL_VERSION" + struct.pack(">h", 5) + b"3.0.0"
        sock.sendall(_cql_frame(0x01, startup, 0))
        opcode, body = _cql_read(sock)
        if opcode != 0x02:  # READY
            raise ProbeError(f"CQL STARTUP answered opcode {opcode:#x}: {body[4:200]!r}")
        query = b"SELECT release_version FROM system.local"
        sock.sendall(_cql_frame(0x07, struct.pack(">i", len(query)) + query + b"\x00\x01\x00", 1))
        opcode, body = _cql_read(sock)
    if opcode != 0x08:  # RESULT
        raise ProbeError(f"CQL query answered opcode {opcode:#x}: {body[4:200]!r}")
    kind, flags, columns = struct.unpack_from(">iii", body, 0)
    if kind != 2 or columns != 1:
        raise ProbeError(f"unexpected CQL result kind {kind} with {columns} columns")
    pos = 12
    if flags & 0x0002:  # has_more_pages: a paging state precedes the column specs
        (size,) = struct.unpack_from(">i", body, pos)
        pos += 4 + size
    if flags & 0x0001:  # global table spec: keyspace and table names
        _, pos = _cql_string(body, pos)
        _, pos = _cql_string(body, pos)
    _, pos = _cql_string(body, pos)  # column name
    pos += 2  # column type id (varchar)
    (rows,) = struct.unpack_from(">i", body, pos)
    if rows != 1:
        raise ProbeError(f"system.local returned {rows} rows")
    (size,) = struct.unpack_from(">i", body, pos + 4)
    return body[pos + 8 : pos + 8 + size].decode()


def mqtt_connect(
    host: str,
    port: int,
    *,
    ca_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """An MQTT 3.1.1 CONNECT that the broker accepts (CONNACK return code 0), then DISCONNECT;
    over TLS verified against `ca_file` when given, with a username and password when given."""
    client = b"faultline-svc-probe"
    flags = 0x02  # clean session
    payload = struct.pack(">h", len(client)) + client
    if username is not None:
        flags |= 0x80
        payload += struct.pack(">h", len(username)) + username.encode()
    if password is not None:
        flags |= 0x40
        payload += struct.pack(">h", len(password)) + password.encode()
    variable = struct.pack(">h", 4) + b"MQTT" + bytes([4, flags]) + struct.pack(">h", 10)
    remaining = len(variable) + len(payload)
    if remaining >= 128:
        raise ProbeError("probe credentials too long for a one-byte remaining length")
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as plain:
        sock = plain
        if ca_file is not None:
            context = ssl.create_default_context(cafile=str(ca_file))
            sock = context.wrap_socket(plain, server_hostname=host)
        sock.sendall(bytes([0x10, remaining]) + variable + payload)
        answer = _recv_exact(sock, 4)
        if answer[0] != 0x20 or answer[3] != 0:
            raise ProbeError(f"MQTT CONNECT refused: {answer.hex()}")
        sock.sendall(b"\xe0\x00")


def http_ready(url: str) -> str:
    """GET `url` (a readiness endpoint such as Alertmanager's /-/ready): its body when 200."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            return reply.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"{url} answered {exc.code}") from exc


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
