"""The decoder is total: for any bytes at all it returns readings and dead letters, never raises.

Property-based (hypothesis) over arbitrary bytes, arbitrary JSON, near-valid readings with
adversarial numbers, times and nesting, and random mutations of valid readings. Each test feeds
a few thousand payloads in batches (more than 10,000 in all), with a good reading last in every
batch that must come through. The runs are derandomised so CI is repeatable; `bench/fuzz_decoder.py`
runs the same properties unbounded and random.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultline.codec import TS_MAX_MS, TS_MIN_MS, RawMessage, ReadingDecoder, encode_reading
from faultline.config import load_settings
from faultline.schema import DEAD_LETTER_PAYLOAD_BYTES, SEQ, STATION_ID, TS
from tests.fuzz import NOW, PROPERTIES, nested, variants

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
