"""Every class of bad input becomes a dead letter with its reason; good neighbours survive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faultline.codec import RawMessage, ReadingDecoder, encode_reading
from faultline.config import load_settings
from faultline.schema import (
    DEAD_LETTER_PAYLOAD_BYTES,
    READING_COLUMNS,
    SEQ,
    STATION_ID,
    TS,
    TS_ASSIGNED,
)

NOW = 1_767_225_600_000


@pytest.fixture
def decoder() -> ReadingDecoder:
    settings = load_settings()
    return ReadingDecoder(settings.sensors, settings.ingest)


def raw(payload: bytes | str, offset: int = 0, received_at: int = NOW) -> RawMessage:
    data = payload.encode() if isinstance(payload, str) else payload
    return RawMessage(data, f"readings/0/{offset}", received_at, offset)


GOOD = encode_reading("station_001", NOW - 1000, 1, {"temperature": 25.0, "humidity": 60.0})


@pytest.mark.parametrize(
    ("payload", "kind", "fragment"),
    [
        (b"\xff\xfe not json", "malformed", "malformed JSON"),
        ("{", "malformed", "malformed JSON"),
        ("[]", "field", "Expected `object`"),
        ('{"ts": 1}', "field", "station_id"),
        ('{"station_id": 7, "values": {"temperature": 1}}', "field", "$.station_id"),
        ('{"station_id": "", "values": {"temperature": 1}}', "field", "$.station_id"),
        ('{"station_id": "a b", "values": {"temperature": 1}}', "field", "$.station_id"),
        ('{"station_id": "s", "values": {"temperature": "hot"}}', "field", "temperature"),
        ('{"station_id": "s", "temperature": "hot"}', "field", "$.temperature"),
        ('{"station_id": "s", "seq": -1, "values": {"temperature": 1}}', "field", "$.seq"),
        ('{"station_id": "s", "ts": "yesterday", "values": {"temperature": 1}}', "field", "ts"),
        ('{"station_id": "s", "values": {"temperature": NaN}}', "malformed", "malformed"),
        ('{"station_id": "s", "values": {"temperature": 1e999}}', "field", "out of range"),
        ('{"station_id": "s", "values": {"pressure": 1.0}}', "sensor", "unknown sensor"),
        ('{"station_id": "s", "values": {}}', "sensor", "no sensor values"),
        ('{"station_id": "s"}', "sensor", "no sensor values"),
        ('{"station_id": "s", "values": {"humidity": 140.0}}', "range", "humidity=140"),
        ('{"station_id": "s", "temperature": -273.0}', "range", "outside physical range"),
        (
            '{"station_id": "s", "ts": "2026-01-01T00:00:00", "values": {"temperature": 1}}',
            "time",
            "no timezone",
        ),
        (
            f'{{"station_id": "s", "ts": {NOW + 3_600_000}, "values": {{"temperature": 1}}}}',
            "time",
            "in the future",
        ),
        (
            f'{{"station_id": "s", "ts": {NOW - 30 * 86_400_000}, "values": {{"temperature": 1}}}}',
            "time",
            "late",
        ),
        # Each of these once stopped the engine for good (issue 9's findings).
        ('{"station_id": "c1", "ts": 1e300, "temperature": 20}', "time", "not a time between"),
        ('{"station_id": "c1", "ts": -1e300, "temperature": 20}', "time", "not a time between"),
        (f'{{"station_id": "c1", "ts": {2**64}, "temperature": 20}}', "time", "not a time"),
        (f'{{"station_id": "c1", "ts": {10**29}, "temperature": 20}}', "time", "not a time"),
        (f'{{"station_id": "c1", "ts": {-(2**63) - 1}, "temperature": 20}}', "time", "not a"),
        (f'{{"station_id": "c1", "ts": {2**63 - 1}, "temperature": 20}}', "time", "not a time"),
        (f'{{"station_id": "c1", "seq": {2**64}, "temperature": 20}}', "field", "$.seq"),
        (f'{{"station_id": "c1", "seq": {2**63}, "temperature": 20}}', "field", "$.seq"),
        ('{"station_id": "s", "ts": "0001-01-01T00:00:00+01:00", "temperature": 1}', "time", "ts"),
        ('{"station_id": "s", "ts": "9999-12-31T23:59:59-01:00", "temperature": 1}', "time", "ts"),
        (f'{{"station_id": "s", "values": {{"temperature": {10**400}}}}}', "range", "too large"),
        (f'{{"station_id": "s", "temperature": {10**400}}}', "field", "out of range"),
        (
            '{"station_id": "s", "x": ' + "[" * 100_000 + "]" * 100_000 + ', "temperature": 1}',
            "malformed",
            "nested too deeply",
        ),
        (
            '{"station_id": "s", "values": {"temperature": ' + "[" * 5000 + "]" * 5000 + "}}",
            "malformed",
            "nested too deeply",
        ),
    ],
)
def test_bad_input_is_dead_lettered_and_neighbours_survive(
    decoder: ReadingDecoder, payload: str | bytes, kind: str, fragment: str
) -> None:
    batch = [raw(GOOD, 0), raw(payload, 1), raw(GOOD.replace(b"station_001", b"station_002"), 2)]
    decoded = decoder.decode(batch)

    assert list(decoded.readings[STATION_ID]) == ["station_001", "station_002"]
    [letter] = decoded.dead_letters
    assert letter.kind == kind
    assert fragment in letter.reason
    assert letter.source == "readings/0/1"
    assert letter.payload == batch[1].payload[:DEAD_LETTER_PAYLOAD_BYTES]
    assert letter.original_size == len(batch[1].payload)


def test_a_dead_letter_keeps_a_bounded_prefix_and_the_size_of_a_huge_payload(
    decoder: ReadingDecoder,
) -> None:
    payload = b'{"station_id": "s", "junk": "' + b"x" * 1_000_000 + b'"}'
    [letter] = decoder.decode([raw(payload)]).dead_letters
    assert letter.payload == payload[:DEAD_LETTER_PAYLOAD_BYTES]
    assert (letter.size, letter.original_size) == (len(payload), len(payload))
    assert letter.received_at == NOW


def test_nonfinite_values_from_other_producers_are_caught(decoder: ReadingDecoder) -> None:
    reasons: list[tuple[str, str] | None] = [None, None]
    values = np.array([[math.inf, 60.0, 50.0], [25.0, 60.0, 50.0]])
    decoder._check_values(values, reasons)
    assert reasons[0] == ("nonfinite", "temperature is not a finite number (inf)")
    assert reasons[1] is None


def test_faultline_form_is_decoded_into_columns(decoder: ReadingDecoder) -> None:
    decoded = decoder.decode([raw(GOOD, 5)])
    frame = decoded.readings
    assert list(frame.columns) == [*READING_COLUMNS, "temperature", "humidity", "noise_level"]
    row = frame.iloc[0]
    assert row[STATION_ID] == "station_001"
    assert row[TS] == NOW - 1000
    assert row[SEQ] == 1
    assert not row[TS_ASSIGNED]
    assert row["temperature"] == 25.0
    assert math.isnan(row["noise_level"])  # not carried: missing, not an error
    assert frame[TS].dtype == np.int64


def test_seed_form_gets_ingest_time_and_bus_offset(decoder: ReadingDecoder) -> None:
    payload = '{"station_id": "s-1", "humidity": 5.2, "noise_level": 17.4, "temperature": 22.8}'
    frame = decoder.decode([raw(payload, offset=42)]).readings
    row = frame.iloc[0]
    assert row[TS] == NOW
    assert row[TS_ASSIGNED]
    assert row[SEQ] == 42
    assert (row["humidity"], row["noise_level"], row["temperature"]) == (5.2, 17.4, 22.8)


def test_iso_timestamps_with_offsets_are_normalised_to_utc(decoder: ReadingDecoder) -> None:
    payload = (
        '{"station_id": "s", "ts": "2026-01-01T01:00:00.250+01:00", "values": {"humidity": 1}}'
    )
    frame = decoder.decode([raw(payload)]).readings
    assert frame.iloc[0][TS] == NOW + 250


def test_null_sensor_means_not_carried(decoder: ReadingDecoder) -> None:
    payload = '{"station_id": "s", "values": {"humidity": null, "temperature": 20}}'
    frame = decoder.decode([raw(payload)]).readings
    assert math.isnan(frame.iloc[0]["humidity"])
    assert frame.iloc[0]["temperature"] == 20


def test_empty_batch(decoder: ReadingDecoder) -> None:
    decoded = decoder.decode([])
    assert len(decoded.readings) == 0
    assert decoded.dead_letters == []
    assert "temperature" in decoded.readings.columns


def test_a_whole_batch_of_garbage_loses_nothing(decoder: ReadingDecoder) -> None:
    batch = [raw(bytes([i % 256]) * (i % 7), i) for i in range(200)]
    decoded = decoder.decode(batch)
    assert len(decoded.readings) == 0
    assert sorted(d.source for d in decoded.dead_letters) == sorted(m.source for m in batch)
