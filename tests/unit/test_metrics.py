"""`BatchTally`: what the Spark engine's executors send back instead of their rows must count
exactly what the in-process engine counts from the rows themselves; every dead-letter kind is
exported from the start."""

from __future__ import annotations

import json
from dataclasses import replace

from faultline.bus import MemoryBus, Record
from faultline.clock import ManualClock
from faultline.codec import RawMessage, ReadingDecoder, encode_reading
from faultline.config import load_settings
from faultline.metrics import BatchTally, Metrics
from faultline.schema import DEAD_LETTER_KINDS
from faultline.store import open_store
from tests.engine.test_engine import T0, TOPIC, make_engine, readings
from tests.fuzz import FINDINGS, NOW, corpus

# Wall-clock durations differ between any two runs; everything else must be equal.
TIMED = ("faultline_batch_seconds",)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created") and not s.name.startswith(TIMED)
    }


def test_tallies_sent_in_pieces_count_what_the_engine_counts_from_the_rows() -> None:
    settings = load_settings(engine={"batch_max_records": 100, "batch_max_wait_s": 0.05})
    records = [
        *readings(30, hot_every=7),
        *readings(12, station="s2", hot_every=4),
        Record(b"{not json"),
        Record(encode_reading("s3", T0, 0, {"temperature": 999.0})),
        Record(encode_reading("s3", T0, 1, {"pressure": 1.0})),
    ]
    clock = ManualClock(T0 + 601_500)  # processed 1.5 s after the bus received the first
    in_process, tallied = Metrics(), Metrics()
    bus = MemoryBus(clock=ManualClock(T0 + 600_000))
    bus.publish(TOPIC, records)
    store = open_store("memory://")
    make_engine(bus, store, settings, metrics=in_process, clock=clock).step()

    bus = MemoryBus(clock=ManualClock(T0 + 600_000))
    bus.publish(TOPIC, records)
    engine = make_engine(bus, open_store("memory://"), settings, metrics=Metrics(), clock=clock)
    batch = engine.prepare(engine.poll()).batch
    # As the executors split a micro-batch: each piece its own tally, sent as JSON, added up.
    first = replace(batch, readings=batch.readings.iloc[:17], dead_letters=batch.dead_letters[:1])
    second = replace(batch, readings=batch.readings.iloc[17:], dead_letters=batch.dead_letters[1:])
    pieces = [
        BatchTally.from_json(json.loads(json.dumps(BatchTally.of(b).to_json())))
        for b in (first, second)
    ]
    tallied.record_batch(pieces[0] + pieces[1], seconds=0.01)

    assert samples(tallied) == samples(in_process)
    counted = samples(tallied)
    assert counted[("faultline_readings_total", ())] == 42
    assert counted[("faultline_anomalies_total", (("sensor", "temperature"),))] == 5 + 3
    assert counted[("faultline_dead_letters_total", (("kind", "malformed"),))] == 1
    assert counted[("faultline_batch_size_sum", ())] == len(records)
    assert counted[("faultline_ingest_to_verdict_seconds_count", ())] == 42
    assert tallied.ingest_rate.rate() > 0


def test_an_empty_tally_adds_nothing_but_the_batch() -> None:
    metrics = Metrics()
    metrics.record_batch(BatchTally(), seconds=0.5)
    counted = samples(metrics)
    assert counted[("faultline_batches_total", ())] == 1
    assert counted[("faultline_readings_total", ())] == 0
    assert counted[("faultline_ingest_to_verdict_seconds_count", ())] == 0


def test_every_dead_letter_kind_is_exported_at_zero_and_the_decoder_makes_no_other() -> None:
    counted = samples(Metrics())
    exported = {dict(k)["kind"] for name, k in counted if name == "faultline_dead_letters_total"}
    assert exported == set(DEAD_LETTER_KINDS)
    settings = load_settings()
    decoder = ReadingDecoder(settings.sensors, settings.ingest)
    payloads = [*corpus(300), *FINDINGS, b"", b"{", b'{"station_id": 1}']
    messages = [RawMessage(p, f"t/0/{i}", NOW, i) for i, p in enumerate(payloads)]
    kinds = {letter.kind for letter in decoder.decode(messages).dead_letters}
    assert {"malformed", "field", "range", "sensor", "time"} <= kinds <= set(DEAD_LETTER_KINDS)
