"""Adversarial payloads for every path into the decoder: hypothesis strategies, cheap random
variants of what they draw, the payloads that once stopped the engine, and a fixed corpus.

The decoder's own property tests draw from these (tests/unit/test_codec_fuzz.py); the path tests
(HTTP, MQTT, Kafka, the Spark job) send them through the real components.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultline.codec import RawMessage, ReadingDecoder, encode_reading
from faultline.config import load_settings

NOW = 1_767_225_600_000
SENSORS = load_settings().sensor_names

# Each of these once stopped detection for good (issue 9): OverflowError or RecursionError in the
# engine thread while ingest went on answering 202.
FINDINGS = [
    b'{"station_id": "c1", "ts": 1e300, "temperature": 20}',
    f'{{"station_id": "c1", "ts": {2**64}, "temperature": 20}}'.encode(),
    f'{{"station_id": "c1", "seq": {2**64}, "temperature": 20}}'.encode(),
    f'{{"station_id": "c1", "ts": {10**29}, "temperature": 20}}'.encode(),
    b'{"station_id": "c1", "x": ' + b"[" * 5000 + b"]" * 5000 + b', "temperature": 20}',
    b'{"station_id": "c1", "ts": "0001-01-01T00:00:00+01:00", "temperature": 20}',
    f'{{"station_id": "c1", "values": {{"temperature": {10**400}}}}}'.encode(),
]


def variants(payload: bytes, seed: int, count: int = 10) -> list[bytes]:
    """`payload` and `count` cheap random mutations of it (bytes flipped, inserted, deleted,
    duplicated, cut): hypothesis draws the interesting payloads, this multiplies them."""
    rng = random.Random(seed)
    out = [payload]
    for _ in range(count):
        data = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, max(len(data) - 1, 0))
            op = rng.randrange(5)
            if op == 0 and data:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            elif op == 2:
                del data[at : at + rng.randint(1, 8)]
            elif op == 3:
                data[at:at] = data[at : at + rng.randint(1, 16)]
            else:
                del data[at:]
        out.append(bytes(data))
    return out


# Number literals as JSON text: beyond int64 and uint64, beyond float, negative zero, exponents.
number_text = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**29]).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e300", "-1e300", "1e400", "-0", "0.0", "1e-400", "1.5e18", "25", "60.5"]),
)
ZONES = [timezone(timedelta(minutes=m)) for m in (0, 60, -60, 14 * 60, -12 * 60, 330)]
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)


def json_text(value: object) -> str:
    return json.dumps(value, allow_nan=True)  # NaN/Infinity too: not JSON, must be rejected


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


times = st.one_of(
    number_text,
    st.datetimes(timezones=st.sampled_from(ZONES)).map(lambda d: json.dumps(d.isoformat())),
    st.datetimes().map(lambda d: json.dumps(d.isoformat())),  # no timezone
    st.sampled_from(
        ['"0001-01-01T00:00:00+01:00"', '"9999-12-31T23:59:59-01:00"', '"yesterday"', "null"]
    ),
    st.just(json.dumps(NOW - 5000)),
)
field_value = st.one_of(number_text, json_value.map(json_text), st.integers(1, 3000).map(nested))
sensor_names = st.one_of(st.sampled_from(SENSORS), st.text(max_size=10))


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A reading-shaped object whose fields are each valid, adversarial or missing."""
    parts: list[str] = []
    if draw(st.booleans()):
        station = draw(
            st.one_of(
                st.text("AZaz09_.:-", min_size=1, max_size=70).map(json.dumps),
                json_value.map(json_text),
            )
        )
        parts.append(f'"station_id": {station}')
    if draw(st.booleans()):
        parts.append(f'"ts": {draw(times)}')
    if draw(st.booleans()):
        parts.append(f'"seq": {draw(st.one_of(number_text, field_value))}')
    if draw(st.booleans()):
        entries = draw(st.lists(st.tuples(sensor_names, field_value), max_size=4))
        inner = ", ".join(f"{json.dumps(k)}: {v}" for k, v in entries)
        parts.append(f'"values": {{{inner}}}' if draw(st.booleans()) else f'"values": {inner}')
    for name, value in draw(st.lists(st.tuples(sensor_names, field_value), max_size=3)):
        parts.append(f"{json.dumps(name)}: {value}")
    return ("{" + ", ".join(draw(st.permutations(parts))) + "}").encode()


valid = st.builds(
    lambda station, ts, seq, t: encode_reading(station, ts, seq, {"temperature": t}),
    st.text("abc0123", min_size=1, max_size=12),
    st.integers(NOW - 86_400_000, NOW),
    st.integers(0, 2**40),
    st.floats(-60, 200),
)


PROPERTIES: dict[str, Callable[[], st.SearchStrategy[bytes]]] = {
    "arbitrary bytes": lambda: st.binary(max_size=300),
    "arbitrary JSON": lambda: json_value.map(lambda v: json_text(v).encode()),
    "near-valid readings": near_valid,
    "mutated valid readings": lambda: valid,
}


def corpus(examples: int) -> list[bytes]:
    """A fixed (derandomised) corpus: `examples` draws over every strategy, 3 variants each, and
    the findings."""
    out: list[bytes] = list(FINDINGS)

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(*(make() for make in PROPERTIES.values())), st.integers(0, 2**32))
    def collect(payload: bytes, seed: int) -> None:
        out.extend(variants(payload, seed, 3))

    collect()
    return out


def rejected(payloads: list[bytes], now_ms: int) -> list[bytes]:
    """Those of `payloads` the decoder (default settings) dead-letters when received at
    `now_ms`: what a path test can count as dead letters."""
    s = load_settings()
    decoded = ReadingDecoder(s.sensors, s.ingest).decode(
        [RawMessage(p, f"f/0/{i}", now_ms, i) for i, p in enumerate(payloads)]
    )
    return [payloads[int(d.source.rsplit("/", 1)[1])] for d in decoded.dead_letters]
