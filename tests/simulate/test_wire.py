"""Simulated records on the wire: they decode through the real decoder, none dead-lettered."""

from __future__ import annotations

import numpy as np
import pandas as pd

from faultline.codec import RawMessage, ReadingDecoder
from faultline.config import DEFAULT_SENSORS, IngestSettings, SensorSpec
from faultline.simulate import DEFAULT_START_MS, Simulator


def decode(sensors: dict[str, SensorSpec], block_records: list, ts: np.ndarray) -> pd.DataFrame:
    decoder = ReadingDecoder(sensors, IngestSettings())
    messages = [
        RawMessage(record.value, f"sim/0/{i}", int(t), i)
        for i, (record, t) in enumerate(zip(block_records, ts, strict=True))
    ]
    decoded = decoder.decode(messages)
    assert decoded.dead_letters == []
    return decoded.readings


def test_records_decode_to_the_same_frame_with_no_dead_letters() -> None:
    sim = Simulator(DEFAULT_SENSORS, stations=12, seed=3, faults_per_station_hour=60.0)
    block = sim.block(DEFAULT_START_MS + 1000 * np.arange(600))
    records = block.records()
    assert len(records) == len(block) > 0
    assert [r.key for r in records] == [
        block.station_ids[s].encode() for s in block.station.tolist()
    ]
    readings = decode(dict(DEFAULT_SENSORS), records, block.ts)
    pd.testing.assert_frame_equal(readings, block.frame(), check_dtype=False)


def test_faults_are_clipped_into_the_physical_range() -> None:
    # A narrow range that spikes, shifts, drift and malfunction noise all overshoot.
    sensors = {"level": SensorSpec(mean=5.0, std=1.0, min=0.0, max=10.0)}
    sim = Simulator(sensors, stations=10, seed=6, faults_per_station_hour=120.0)
    block = sim.block(DEFAULT_START_MS + 1000 * np.arange(1800))
    kinds = {label.kind for label in block.labels}
    assert {"spike", "level_shift", "drift", "malfunction"} <= kinds
    values = block.values[:, 0]
    assert values.min() == 0.0 and values.max() == 10.0  # reached the limits, never past them
    decode(sensors, block.records(), block.ts)
