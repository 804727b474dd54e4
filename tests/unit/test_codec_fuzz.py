"""The decoder is total: for any bytes at all it returns readings and dead letters, never raises.

Property-based (hypothesis) over arbitrary bytes, arbitrary JSON, near-valid readings with
adversarial numbers, times and nesting, and random mutations of valid readings. Each test feeds
a few thousand payloads in batches (more than 10,000 in all), with a good reading last in every
batch that must come through. The runs are derandomised so CI is repeatable; `bench/fuzz_decoder.py`
runs the same properties unbounded and random.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from datetime import timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultline.codec import TS_MAX_MS, TS_MIN_MS, RawMessage, ReadingDecoder, encode_reading
from faultline.config import load_settings
from faultline.schema import DEAD_LETTER_PAYLOAD_BYTES, SEQ, STATION_ID, TS

NOW = 1_767_225_600_000
SETTINGS = load_settings()
SENSORS = SETTINGS.sensor_names
KINDS = {"malformed", "field", "sensor", "nonfinite", "range", "time"}
STATION_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
SENTINEL = encode_reading("sentinel", NOW - 1000, 1, {"temperature": 25.0})
# Per property; a batch holds 2-4 drawn payloads and 10 variants of each: >= 3,300 payloads.
EXAMPLES = 150


@pytest.fixture(scope="module")
def decoder() -> ReadingDecoder:
    return ReadingDecoder(SETTINGS.sensors, SETTINGS.ingest)


def check_total(decoder: ReadingDecoder, payloads: list[bytes]) -> None:
    """Everything the decoder promises, for one batch of `payloads` plus a good sentinel last."""
    batch = [*payloads, SENTINEL]
    messages = [RawMessage(p, f"t/0/{i}", NOW, i) for i, p in enumerate(batch)]
    decoded = decoder.decode(messages)  # must not raise, whatever the bytes

    readings, letters = decoded.readings, decoded.dead_letters
    assert len(readings) + len(letters) == len(batch)
    assert len(decoded.rows) == len(readings)
    assert np.all(np.diff(decoded.rows) > 0)
    dead_rows = {int(d.source.rsplit("/", 1)[1]) for d in letters}
    assert dead_rows.isdisjoint(decoded.rows.tolist())
    assert dead_rows | set(decoded.rows.tolist()) == set(range(len(batch)))
    for letter in letters:
        original = batch[int(letter.source.rsplit("/", 1)[1])]
        assert letter.kind in KINDS and letter.reason
        assert letter.payload == original[:DEAD_LETTER_PAYLOAD_BYTES]
        assert letter.original_size == len(original)
    assert readings[STATION_ID].iloc[-1] == "sentinel"
    assert all(STATION_PATTERN.match(s) for s in readings[STATION_ID])
    ts = readings[TS].to_numpy()
    assert np.all((ts >= TS_MIN_MS) & (ts <= TS_MAX_MS))
    assert np.all(readings[SEQ].to_numpy() >= 0)
    values = readings[list(SENSORS)].to_numpy()
    assert np.all(~np.isnan(values).all(axis=1))
    present = ~np.isnan(values)
    assert np.all(np.isfinite(values[present]))
    low = np.array([s.min for s in SETTINGS.sensors.values()])
    high = np.array([s.max for s in SETTINGS.sensors.values()])
    with np.errstate(invalid="ignore"):
        assert not np.any(present & ((values < low) | (values > high)))


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


def run_property(decoder: ReadingDecoder, payload: st.SearchStrategy[bytes]) -> int:
    """Check `check_total` over EXAMPLES batches drawn from `payload`, each payload with its
    variants; how many payloads ran."""
    seen = [0]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(payload, min_size=2, max_size=4), st.integers(0, 2**32))
    def prop(drawn: list[bytes], seed: int) -> None:
        payloads = [v for i, p in enumerate(drawn) for v in variants(p, seed + i)]
        seen[0] += len(payloads)
        check_total(decoder, payloads)

    prop()
    return seen[0]


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


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_the_decoder_never_raises_and_loses_no_neighbour(
    decoder: ReadingDecoder, name: str
) -> None:
    assert run_property(decoder, PROPERTIES[name]()) >= 2_500


def test_pathological_nesting_and_sizes_are_dead_letters(decoder: ReadingDecoder) -> None:
    payloads = [
        f'{{"station_id": "s", "x": {nested(200_000)}, "temperature": 1}}'.encode(),
        ("[" * 1_000_000).encode(),
        ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(),
        b'{"station_id": "s", "temperature": 1' + b" " * 2_000_000 + b"}",
        b'{"station_id": "' + b"s" * 100_000 + b'", "temperature": 1}',
    ]
    check_total(decoder, payloads)
