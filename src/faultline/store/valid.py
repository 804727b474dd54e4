"""The one check every store runs on a batch before it writes anything.

Stores used to differ here: the in-memory and Cassandra stores checked a batch up front while
SQLite and PostgreSQL left part of it (a fault label ending before it starts, text PostgreSQL
cannot hold) to their constraints, so the same bad batch got different messages, and a test of
atomicity could not tell a store that rolled back from one that never started. Now `validate`
refuses every batch that some backend could not store, with one InvalidBatch message, and
returns the batch in the form the stores write from; past it, only the backend itself can fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from faultline.schema import DEAD_LETTER_PAYLOAD_BYTES, WriteBatch
from faultline.store.base import InvalidBatch
from faultline.store.columns import (
    BatchColumns,
    GlobalAnomalyRow,
    GlobalAnomalyRunRow,
    batch_columns,
    check_faults,
    check_texts,
    dead_letter_fields,
    global_anomaly_rows,
    global_anomaly_run_row,
)

DeadLetterFields = tuple[int, str, str, bytes, str]
"""(received_at, source, reason, payload, kind) of a dead letter to store."""
FaultRow = tuple[str, str, str, int, int]
"""(station_id, sensor, kind, start_ts, end_ts) of a fault label to store."""


@dataclass(frozen=True)
class ValidBatch:
    """A WriteBatch every store can take, taken apart."""

    columns: BatchColumns
    letters: list[DeadLetterFields]
    faults: list[FaultRow]
    anomalies: list[GlobalAnomalyRow]
    run: GlobalAnomalyRunRow | None


def validate(batch: WriteBatch) -> ValidBatch:
    """`batch` checked and taken apart; InvalidBatch, with the same message whatever the store,
    when any part of it cannot be stored."""
    columns = batch_columns(batch)
    letters = dead_letter_fields(batch.dead_letters)
    check_faults(batch.faults)
    anomalies = global_anomaly_rows(batch.global_anomalies)
    run = global_anomaly_run_row(batch, anomalies)
    check_texts("sensor name", batch.sensors)
    check_texts("detector name", batch.detectors)
    for _, source, reason, payload, kind in letters:
        check_texts("dead letter source", (source,), keyed=True)
        check_texts(f"dead letter {source!r}: reason", (reason,))
        check_texts(f"dead letter {source!r}: kind", (kind,))
        if len(payload) > DEAD_LETTER_PAYLOAD_BYTES:
            raise InvalidBatch(
                f"dead letter {source!r} keeps {len(payload)} bytes of payload, more than "
                f"{DEAD_LETTER_PAYLOAD_BYTES}: make it with DeadLetter.of, which keeps a prefix"
            )
    for f in batch.faults:
        check_texts("fault label station_id", (f.station_id,), keyed=True)
        check_texts("fault label sensor", (f.sensor,), keyed=True)
        check_texts("fault label kind", (f.kind,), keyed=True)
    for row in anomalies:
        check_texts("global anomaly station_id", (row[1],), keyed=True)
        check_texts("global anomaly sensor", (row[2],), keyed=True)
    if run is not None:
        check_texts("global-anomaly run skip reason", run[5])
        check_texts("global-anomaly run error", () if run[7] is None else (run[7],))
    faults = [(f.station_id, f.sensor, f.kind, f.start_ts, f.end_ts) for f in batch.faults]
    return ValidBatch(columns, letters, faults, anomalies, run)
