"""Every store refuses the same invalid batches with the same InvalidBatch message, before it
writes anything (faultline.store.valid), including what only one backend's constraints or
encoding would have caught."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import pytest

from faultline.schema import DEAD_LETTER_PAYLOAD_BYTES, FaultLabel, GlobalAnomaly, WriteBatch
from faultline.store import DeadLetterCount, FaultLabels, InvalidBatch, Stations, Store
from faultline.store.base import LAST_MS
from tests.contract.batches import T0, dead_letter, reading_frame, write_batch

EVERYTHING = (0, LAST_MS)


def _with_station(station_id: str) -> WriteBatch:
    return write_batch(reading_frame(["s-1", station_id], [T0, T0 + 1000]))


def _with_value(value: float) -> WriteBatch:
    frame = reading_frame(["s-1", "s-2"], [T0, T0 + 1000])
    frame.loc[1, "humidity"] = value
    return write_batch(frame)


def _with_model_version(version: str) -> WriteBatch:
    return write_batch(reading_frame("s-1", [T0], model_version=version))


def _with_letter(**changes: object) -> WriteBatch:
    return write_batch(
        reading_frame("s-1", [T0]), dead_letters=[replace(dead_letter(1), **changes)]
    )


def _with_fault(label: FaultLabel) -> WriteBatch:
    return write_batch(reading_frame("s-1", [T0]), faults=[label])


INVALID: dict[str, tuple[WriteBatch, str]] = {
    "fault label ending before it starts": (
        _with_fault(FaultLabel("s-2", "humidity", "drift", T0 + 5000, T0 + 4000)),
        f"fault label drift on s-2/humidity ends ({T0 + 4000}) before it starts ({T0 + 5000})",
    ),
    "fault label of an empty station": (
        _with_fault(FaultLabel("", "humidity", "drift", T0, T0)),
        "fault label station_id must not be empty",
    ),
    "NUL in a station id": (
        _with_station("s\x002"),
        "station_id 's\\x002' holds a NUL character, which stores cannot hold",
    ),
    "empty station id": (_with_station(""), "station_id must not be empty"),
    "lone surrogate in a station id": (
        _with_station("s-\ud800"),
        "station_id 's-\\ud800' is not valid Unicode (a lone surrogate)",
    ),
    "NUL in a model version": (
        _with_model_version("m\x00"),
        "model_version 'm\\x00' holds a NUL character, which stores cannot hold",
    ),
    "infinite sensor value": (
        _with_value(math.inf),
        "sensor 'humidity' of station 's-2' at ts=1767225601000 is inf: sensor values must be "
        "finite",
    ),
    "NUL in a dead letter's reason": (
        _with_letter(reason="bad\x00"),
        "dead letter 'faultline.readings/0/1': reason 'bad\\x00' holds a NUL character, which "
        "stores cannot hold",
    ),
    "dead letter without a source": (
        _with_letter(source=""),
        "dead letter source must not be empty",
    ),
    "dead letter payload beyond the prefix": (
        _with_letter(payload=b"x" * (DEAD_LETTER_PAYLOAD_BYTES + 1)),
        f"dead letter 'faultline.readings/0/1' keeps {DEAD_LETTER_PAYLOAD_BYTES + 1} bytes of "
        f"payload, more than {DEAD_LETTER_PAYLOAD_BYTES}: make it with DeadLetter.of, which "
        "keeps a prefix",
    ),
    "global anomaly outside its day": (
        write_batch(
            global_anomalies=[GlobalAnomaly(date(2026, 1, 2), "s-1", "humidity", T0, 1, 2, 3)]
        ),
        f"global anomaly of s-1/humidity: minute {T0} is not in its day 2026-01-02",
    ),
    "missing columns": (
        write_batch(reading_frame("s-1", [T0]).drop(columns=["humidity"])),
        "readings frame lacks columns: humidity",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_batch_gets_the_same_message_from_every_store(store: Store, case: str) -> None:
    batch, message = INVALID[case]

    with pytest.raises(InvalidBatch) as refused:
        store.write(batch)

    assert str(refused.value) == message
    assert store.query(Stations()) == []
    assert store.query(DeadLetterCount()) == 0
    assert store.query(FaultLabels(*EVERYTHING)) == []
