"""The Spark job's Python stages without Spark: decoding Kafka rows, and detection with state
carried between micro-batches through a stand-in for Spark's GroupState."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from faultline.alarm_schema import AlarmTransition, transition_from_json
from faultline.codec import ReadingDecoder
from faultline.config import Settings
from faultline.detect import DetectorPipeline
from faultline.detect.factory import build_detectors
from faultline.engine.alarming import EngineAlarms
from faultline.runtime import ensure_model, model_registry
from faultline.schema import IS_ANOMALY, STATION_ID, score_column
from faultline.simulate import Simulator
from tests.spark.conftest import SettingsFactory

pytest.importorskip("pyspark", reason="pyspark not installed: pip install -e '.[spark]'")

from faultline.engine.spark.layout import (
    ALARM,
    DEAD_LETTERS_BUCKET,
    REASON,
    decoded_schema,
    is_alarm,
    is_dead,
)
from faultline.engine.spark.stages import (
    BucketCountChanged,
    decode,
    detect_stage,
)

T0 = 1_767_225_600_000


class GroupState:
    """Spark's GroupState as the stage uses it: exists, get, update, its processing-time
    timeout and clock (a unit-level stand-in)."""

    def __init__(self, now_ms: int = T0) -> None:
        self.value: tuple[str] | None = None
        self.now_ms = now_ms
        self.timeout_ms: int | None = None
        self.hasTimedOut = False

    def getCurrentProcessingTimeMs(self) -> int:
        return self.now_ms

    def setTimeoutDuration(self, ms: int) -> None:
        self.timeout_ms = ms

    @property
    def exists(self) -> bool:
        return self.value is not None

    @property
    def get(self) -> tuple[str]:
        assert self.value is not None
        return self.value

    def update(self, value: tuple[str]) -> None:
        self.value = value


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    made = make_settings(bus_url="memory://")
    ensure_model(made, model_registry(made))
    return made


def kafka_rows(settings: Settings, ticks: int, extra: Sequence[bytes] = ()) -> pd.DataFrame:
    """What the job selects from the Kafka source: 4 stations over 2 partitions, then `extra`."""
    sim = Simulator(settings.sensors, stations=4, seed=5, faults_per_station_hour=600)
    block = sim.block(T0 + 1000 * np.arange(ticks))
    values = [r.value for r in block.records()] + list(extra)
    partition = np.concatenate([block.station % 2, np.zeros(len(extra), np.int64)])
    offset = np.zeros(len(values), np.int64)
    for p in (0, 1):
        offset[partition == p] = np.arange(int((partition == p).sum()))
    return pd.DataFrame(
        {
            "value": values,
            "topic": "readings",
            "partition": partition.astype(np.int32),
            "offset": offset,
            "received_at": np.full(len(values), T0 + 1000 * ticks),
        }
    )


def test_decode_keeps_bus_positions_and_turns_bad_messages_into_dead_letters(
    settings: Settings,
) -> None:
    raw = kafka_rows(settings, 3, [b"{not json", b'{"station_id": "s1", "values": {"x": 1}}'])
    out = decode(
        raw,
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    assert list(out.columns) == decoded_schema(settings.sensor_names).fieldNames()
    dead = out[is_dead(out)]
    assert dead["_kind"].tolist() == ["malformed", "sensor"]
    assert dead["_source"].tolist() == [f"readings/0/{o}" for o in raw["offset"].tail(2)]
    assert (dead[STATION_ID] == "").all()
    good = out[~is_dead(out)]
    assert len(good) == 12 and (good[REASON] == "").all()
    assert good["_kafka_offset"].tolist() == raw["offset"].head(12).tolist()
    # Strings stay numpy objects: pyspark cannot convert pandas 3's Arrow-backed strings.
    assert good[STATION_ID].dtype == object


def test_detection_split_over_micro_batches_equals_one_pass_of_the_pipeline(
    settings: Settings,
) -> None:
    decoded = decode(
        kafka_rows(settings, 90),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    stage = detect_stage(settings, buckets=4)
    state = GroupState()
    # Three micro-batches, each arriving shuffled (Spark gives no order within a group).
    bounds = [0, 100, 230, len(decoded)]
    parts = [
        decoded.iloc[start:end].sample(frac=1, random_state=start)
        for start, end in itertools.pairwise(bounds)
    ]
    got = pd.concat([next(stage((0,), iter([part]), state)) for part in parts], ignore_index=True)

    in_order = decoded.sort_values(["_kafka_partition", "_kafka_offset"], ignore_index=True)
    model = model_registry(settings).current()
    model_pipeline = DetectorPipeline(build_detectors(settings, model))
    expected = model_pipeline.run(in_order)
    key = [STATION_ID, "ts", "seq"]
    got = got.sort_values(key, ignore_index=True)
    expected = expected.sort_values(key, ignore_index=True)
    scores = [score_column(name) for name in model_pipeline.names]
    for column in [*key, IS_ANOMALY, *scores]:
        np.testing.assert_array_equal(got[column].to_numpy(), expected[column].to_numpy())
    assert got[IS_ANOMALY].any()
    assert json.loads(state.get[0])["buckets"] == 4


def test_dead_letters_pass_through_detection_untouched(settings: Settings) -> None:
    decoded = decode(
        kafka_rows(settings, 0, [b"[]"]),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    state = GroupState()
    out = next(detect_stage(settings, 4)((DEAD_LETTERS_BUCKET,), iter([decoded]), state))
    assert out["_reason"].tolist() == decoded["_reason"].tolist() and not state.exists


def test_state_from_another_bucket_count_is_refused(settings: Settings) -> None:
    decoded = decode(
        kafka_rows(settings, 2),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    state = GroupState()
    next(detect_stage(settings, 4)((1,), iter([decoded]), state))
    with pytest.raises(BucketCountChanged, match="in 4 buckets, this job has 8"):
        next(detect_stage(settings, 8)((1,), iter([decoded]), state))


def test_a_reading_detection_chokes_on_becomes_a_dead_letter_not_a_failed_job(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faultline.engine.spark import stages
    from tests.engine.test_poison import POISON, Choking

    decoded = decode(
        kafka_rows(settings, 30),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    victim = decoded.index[(~is_dead(decoded)) & (decoded[STATION_ID] != "")][17]
    decoded.loc[victim, "temperature"] = POISON
    monkeypatch.setattr(
        stages, "fresh_pipeline", lambda s, _model: DetectorPipeline([Choking(s.sensor_names)])
    )
    state = GroupState()

    out = pd.concat(list(detect_stage(settings, 4)((0,), iter([decoded]), state)))

    dead = out[is_dead(out)]
    assert dead["_kind"].tolist() == ["poison"]
    assert "detection failed on this reading: ZeroDivisionError" in dead[REASON].iloc[0]
    row = decoded.loc[victim]
    assert dead["_source"].iloc[0] == (
        f"{settings.readings_topic}/{row['_kafka_partition']}/{row['_kafka_offset']}"
    )
    assert b"66.6" in dead["_payload"].iloc[0]
    assert len(out[~is_dead(out)]) == len(decoded) - 1
    assert state.exists


QUICK_ALARMS = {"warmup_readings": 10, "rule": {"on_delay_readings": 3, "off_delay_readings": 5}}


def alarm_transitions(frames: Sequence[pd.DataFrame]) -> list[AlarmTransition]:
    out = pd.concat(frames, ignore_index=True)
    return [transition_from_json(json.loads(x)) for x in out.loc[is_alarm(out), ALARM]]


def test_alarms_split_over_micro_batches_equal_the_in_process_engines(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(bus_url="memory://", alarms=QUICK_ALARMS)
    ensure_model(settings, model_registry(settings))
    decoded = decode(
        kafka_rows(settings, 120),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    stage = detect_stage(settings, buckets=4)
    state = GroupState()
    bounds = [0, 150, 333, len(decoded)]
    got = alarm_transitions(
        [
            frame
            for start, end in itertools.pairwise(bounds)
            for frame in stage((0,), iter([decoded.iloc[start:end].sample(frac=1)]), state)
        ]
    )

    # What the in-process engine's alarm state makes of the same verdicts in one pass.
    in_order = decoded.sort_values(["_kafka_partition", "_kafka_offset"], ignore_index=True)
    model = model_registry(settings).current()
    verdicts = DetectorPipeline(build_detectors(settings, model)).run(in_order)
    alarms = EngineAlarms(settings.alarms, settings.sensor_names)
    expected = alarms.step(verdicts)
    anomaly = [t for t in got if t.alarm.kind == "anomaly"]
    assert expected and sorted(anomaly, key=lambda t: t.key) == sorted(
        expected, key=lambda t: t.key
    )
    # The readings all arrived at once (kafka_rows), so no station fell silent meanwhile.
    assert [t for t in got if t.alarm.kind == "silent"] == []
    assert state.timeout_ms == round(settings.alarms.rule.silent_after_s * 1000)


def test_a_bucket_that_gets_nothing_raises_silence_when_spark_times_it_out(
    settings: Settings,
) -> None:
    decoded = decode(
        kafka_rows(settings, 5),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    stage = detect_stage(settings, buckets=4)
    state = GroupState()
    list(stage((0,), iter([decoded]), state))
    last = int(decoded["received_at"].max())

    state.hasTimedOut, state.now_ms = True, last + 60_000
    # Spark may call a timed-out group with one empty frame rather than none.
    silent = alarm_transitions(list(stage((0,), iter([decoded.iloc[:0]]), state)))
    after_ms = round(settings.alarms.rule.silent_after_s * 1000)
    assert sorted((t.alarm.station_id, t.action, t.activation_ts) for t in silent) == [
        (station, "raise", last + after_ms) for station in sorted(decoded[STATION_ID].unique())
    ]

    # One station reports again: its silence clears at that reading, in the next micro-batch.
    state.hasTimedOut = False
    again = decode(
        kafka_rows(settings, 1).head(1).assign(received_at=last + 61_000),
        ReadingDecoder(settings.sensors, settings.ingest),
        decoded_schema(settings.sensor_names),
    )
    cleared = alarm_transitions(list(stage((0,), iter([again]), state)))
    station = str(again[STATION_ID].iloc[0])
    assert [(t.alarm.station_id, t.action, t.ts) for t in cleared] == [
        (station, "clear", last + 61_000)
    ]
