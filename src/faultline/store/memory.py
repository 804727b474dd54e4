"""An in-process store (`memory://`): the reference for the store contract and for fast tests.

Everything lives in dicts and sorted key lists behind one lock. A write checks and builds every
new object first and only then, under the lock, mutates, each mutation through a journal that
keeps its undo: should anything fail halfway (a bug, MemoryError, an interrupt), the journal
undoes what the write did, so a batch is committed whole or not at all (Atomicity.BATCH). The
1-minute aggregates take in the readings found new under that lock, so a replay adds nothing.
Alarm transitions new to the log are offered to their alarm's row (faultline.store.alarm_rows)
in history order; the rows are also kept sorted by (-changed_at, id), overall and per station,
which is the order Alarms pages through.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pandas as pd

from faultline.alarm_schema import AlarmTransition
from faultline.batch.aggregate import Partial, aggregate_frame, merge_partial, partial_rows
from faultline.schema import (
    RUN_SUCCEEDED,
    Checkpoint,
    FaultLabel,
    GlobalAnomaly,
    GlobalAnomalyRun,
    WriteBatch,
)
from faultline.store.alarm_rows import HistoryOrder, StoredAlarm, history_order, matches, take
from faultline.store.base import (
    AlarmHistory,
    AlarmPage,
    AlarmRow,
    Alarms,
    AlarmTransitions,
    AnomalyCount,
    Atomicity,
    Checkpoints,
    DeadLetterCount,
    DeadLetterRetention,
    DeadLetterRow,
    DeadLetters,
    FaultLabels,
    GlobalAnomalies,
    GlobalAnomalyRuns,
    LatestAnomalies,
    MinuteAggregates,
    Query,
    R,
    ReadingPage,
    ReadingRow,
    RecentReadings,
    RecordedTransition,
    StationReadings,
    Stations,
    StationSummary,
    Store,
    StoreError,
    TransitionFeed,
)
from faultline.store.checkpoints import CheckpointRow, checkpoint, checkpoint_rows
from faultline.store.columns import (
    BatchColumns,
    GlobalAnomalyRow,
    GlobalAnomalyRunRow,
    day_number,
    global_anomaly,
    global_anomaly_run,
    recent_frame,
)
from faultline.store.valid import validate

_TimeKey = tuple[int, str, int]  # (ts, station_id, seq): the global order
_StationKey = tuple[int, int]  # (ts, seq): the order within a station
_FaultKey = tuple[str, str, str, int]
_MinuteKey = tuple[int, str, str]  # (minute, station_id, sensor): the global order
_StationMinute = tuple[int, str]  # (minute, sensor): the order within a station
_AnomalyKey = tuple[int, str, str, int]  # (day number, station_id, sensor, minute)
_TransitionTime = tuple[int, str, str, str, str]  # (ts, station_id, sensor, kind, key)
_Recorded = tuple[int, str]  # (recorded_at, key): the feed's order
_Changed = tuple[int, str]  # (-changed_at, alarm id): the order of Alarms


class _Journal:
    """The mutations of one write, each recorded with its undo."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def step(self) -> None:
        """Runs before every mutation: the one point where a write can fail halfway (tests make
        it fail to check that the rest is rolled back)."""

    def put(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        self.step()
        if key in mapping:
            old = mapping[key]
            self._undo.append(lambda: mapping.__setitem__(key, old))
        else:
            self._undo.append(lambda: mapping.__delitem__(key))
        mapping[key] = value

    def insort(self, keys: list[Any], key: Any) -> None:
        """Insert `key`, not in `keys` yet, into the sorted list `keys`."""
        self.step()
        insort(keys, key)
        self._undo.append(lambda: keys.pop(bisect_left(keys, key)))

    def remove(self, keys: list[Any], key: Any) -> None:
        """Remove `key`, which is in the sorted list `keys`."""
        self.step()
        keys.pop(bisect_left(keys, key))
        self._undo.append(lambda: insort(keys, key))

    def append(self, items: list[Any], item: Any) -> None:
        self.step()
        items.append(item)
        self._undo.append(items.pop)

    def add(self, items: set[Any], item: Any) -> None:
        self.step()
        items.add(item)
        self._undo.append(lambda: items.discard(item))

    def delete(self, mapping: dict[Any, Any], keys: list[Any], start: int, end: int) -> None:
        """Delete keys[start:end] from the sorted list `keys` and from `mapping`."""
        self.step()
        gone = keys[start:end]
        values = [mapping.pop(key) for key in gone]
        del keys[start:end]

        def undo() -> None:
            keys[start:start] = gone
            mapping.update(zip(gone, values, strict=True))

        self._undo.append(undo)

    def roll_back(self) -> None:
        while self._undo:
            self._undo.pop()()


class MemoryStore(Store):
    """A thread-safe Store held in memory; gone when the process ends."""

    atomicity = Atomicity.BATCH

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._readings: dict[_TimeKey, ReadingRow] = {}
        self._timeline: list[_TimeKey] = []
        self._anomalies: list[_TimeKey] = []
        self._by_station: dict[str, list[_StationKey]] = {}
        self._anomalies_by_station: dict[str, list[_StationKey]] = {}
        self._stations: dict[str, StationSummary] = {}
        self._latest: dict[str, _StationKey] = {}
        self._dead_letters: list[DeadLetterRow] = []
        self._dead_letter_sources: set[str] = set()
        self._last_letter_id = 0  # ids keep increasing when old letters expire
        self._faults: dict[_FaultKey, FaultLabel] = {}
        self._minutes: dict[_MinuteKey, Partial] = {}
        self._minute_keys: list[_MinuteKey] = []
        self._minutes_by_station: dict[str, list[_StationMinute]] = {}
        self._global_anomalies: dict[_AnomalyKey, GlobalAnomalyRow] = {}
        self._global_anomaly_keys: list[_AnomalyKey] = []
        self._global_anomaly_runs: dict[int, GlobalAnomalyRunRow] = {}  # by day number
        self._global_anomaly_run_days: list[int] = []
        self._checkpoints: dict[tuple[str, str, int], CheckpointRow] = {}
        self._transitions: dict[str, RecordedTransition] = {}  # the log, by key
        self._histories: dict[str, list[HistoryOrder]] = {}  # by alarm id
        self._transition_times: list[_TransitionTime] = []
        self._recorded: list[_Recorded] = []
        self._alarms: dict[str, StoredAlarm] = {}  # the rows, by alarm id
        self._changed: list[_Changed] = []
        self._changed_by_station: dict[str, list[_Changed]] = {}
        self._handlers: dict[type[Any], Callable[[Any], Any]] = {
            LatestAnomalies: self._latest_anomalies,
            AnomalyCount: self._anomaly_count,
            StationReadings: self._station_readings,
            Stations: self._station_summaries,
            DeadLetters: self._dead_letter_rows,
            DeadLetterCount: lambda _q: len(self._dead_letters),
            FaultLabels: self._fault_labels,
            RecentReadings: self._recent_readings,
            MinuteAggregates: self._minute_aggregates,
            GlobalAnomalies: self._global_anomaly_rows,
            GlobalAnomalyRuns: self._global_anomaly_run_rows,
            Checkpoints: self._checkpoint_rows,
            Alarms: self._alarm_page,
            AlarmHistory: self._alarm_history,
            AlarmTransitions: self._alarm_transitions,
            TransitionFeed: self._transition_feed,
        }

    def write(self, batch: WriteBatch) -> None:
        valid = validate(batch)
        columns, letters, anomalies, run = valid.columns, valid.letters, valid.anomalies, valid.run
        rows = _reading_rows(columns, batch.processed_at)
        latest = [rows[i] for i in columns.latest_per_station()]
        checkpoints = checkpoint_rows(batch.checkpoints)
        partials = None
        with self._lock:
            self._check_open()
            new = np.array([(r.ts, r.station_id, r.seq) not in self._readings for r in rows], bool)
            if new.any():
                partials = columns.minute_partials(new)
            journal = self._journal()
            try:
                for row in latest:
                    self._offer_latest(journal, row)
                for row in rows:
                    self._insert(journal, row)
                if partials is not None:
                    self._add_minutes(journal, partials)
                self._add_dead_letters(journal, letters)
                for label in batch.faults:
                    key = (label.station_id, label.sensor, label.kind, label.start_ts)
                    known = self._faults.get(key)
                    if known is None or label.end_ts > known.end_ts:
                        journal.put(self._faults, key, label)
                if run is not None:
                    if run[3] == RUN_SUCCEEDED:
                        self._clear_global_anomalies(journal, run[0])
                    if run[0] not in self._global_anomaly_runs:
                        journal.insort(self._global_anomaly_run_days, run[0])
                    journal.put(self._global_anomaly_runs, run[0], run)
                for anomaly in anomalies:
                    if anomaly[:4] not in self._global_anomalies:
                        journal.insort(self._global_anomaly_keys, anomaly[:4])
                    journal.put(self._global_anomalies, anomaly[:4], anomaly)
                self._put_checkpoints(journal, checkpoints)
                self._add_transitions(journal, valid.transitions, batch.processed_at)
            except BaseException:
                journal.roll_back()
                raise

    def expire(self, retention: DeadLetterRetention, now_ms: int) -> int:
        cutoff = retention.cutoff_ms(now_ms)
        with self._lock:
            self._check_open()
            newest = sorted(self._dead_letters, key=lambda d: (d.received_at, d.id), reverse=True)
            kept = {d.id for d in newest[: retention.max_count] if d.received_at >= cutoff}
            gone = len(self._dead_letters) - len(kept)
            self._dead_letters = [d for d in self._dead_letters if d.id in kept]
            self._dead_letter_sources = {d.source for d in self._dead_letters}
            return gone

    def query(self, q: Query[R]) -> R:
        handler = self._handlers.get(type(q))
        if handler is None:
            raise TypeError(f"{type(self).__name__} cannot answer {type(q).__name__}")
        with self._lock:
            self._check_open()
            return cast(R, handler(q))

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _journal(self) -> _Journal:
        return _Journal()

    def _add_dead_letters(
        self, journal: _Journal, letters: list[tuple[int, str, str, bytes, str]]
    ) -> None:
        for received_at, source, reason, payload, kind in letters:
            if source not in self._dead_letter_sources:
                journal.add(self._dead_letter_sources, source)
                self._last_letter_id += 1
                journal.append(
                    self._dead_letters,
                    DeadLetterRow(self._last_letter_id, received_at, source, reason, payload, kind),
                )

    def _offer_latest(self, journal: _Journal, row: ReadingRow) -> None:
        key = (row.ts, row.seq)
        known = self._stations.get(row.station_id)
        if known is not None and key <= self._latest[row.station_id]:
            return
        journal.put(self._latest, row.station_id, key)
        journal.put(
            self._stations,
            row.station_id,
            StationSummary(
                station_id=row.station_id,
                last_ts=row.ts,
                last_received_at=row.received_at,
                last_values=row.values,
                last_is_anomaly=row.is_anomaly,
                readings=known.readings if known else 0,
                anomalies=known.anomalies if known else 0,
            ),
        )

    def _insert(self, journal: _Journal, row: ReadingRow) -> None:
        key = (row.ts, row.station_id, row.seq)
        if key in self._readings:
            return
        journal.put(self._readings, key, row)
        journal.insort(self._timeline, key)
        journal.insort(_listed(journal, self._by_station, row.station_id), (row.ts, row.seq))
        summary = self._stations[row.station_id]
        journal.put(
            self._stations,
            row.station_id,
            replace(
                summary,
                readings=summary.readings + 1,
                anomalies=summary.anomalies + row.is_anomaly,
            ),
        )
        if row.is_anomaly:
            journal.insort(self._anomalies, key)
            by_station = _listed(journal, self._anomalies_by_station, row.station_id)
            journal.insort(by_station, (row.ts, row.seq))

    def _add_minutes(self, journal: _Journal, partials: pd.DataFrame) -> None:
        for station, sensor, minute, count, total, low, high in partial_rows(partials):
            key = (minute, station, sensor)
            known = self._minutes.get(key)
            if known is None:
                journal.insort(self._minute_keys, key)
                by_station = _listed(journal, self._minutes_by_station, station)
                journal.insort(by_station, (minute, sensor))
            journal.put(self._minutes, key, merge_partial(known, (count, total, low, high)))

    def _clear_global_anomalies(self, journal: _Journal, day: int) -> None:
        start = bisect_left(self._global_anomaly_keys, (day,))
        end = bisect_left(self._global_anomaly_keys, (day + 1,))
        journal.delete(self._global_anomalies, self._global_anomaly_keys, start, end)

    def _put_checkpoints(self, journal: _Journal, rows: list[CheckpointRow]) -> None:
        for row in rows:
            known = self._checkpoints.get(row[:3])
            if known is None or row[3] >= known[3]:
                journal.put(self._checkpoints, row[:3], row)

    def _add_transitions(
        self, journal: _Journal, transitions: list[AlarmTransition], recorded_at: int
    ) -> None:
        for t in sorted(transitions, key=lambda t: (t.alarm.id, history_order(t))):
            if t.key in self._transitions:
                continue
            alarm = t.alarm
            journal.put(self._transitions, t.key, RecordedTransition(t, recorded_at))
            journal.insort(_listed(journal, self._histories, alarm.id), history_order(t))
            journal.insort(
                self._transition_times, (t.ts, alarm.station_id, alarm.sensor, alarm.kind, t.key)
            )
            journal.insort(self._recorded, (recorded_at, t.key))
            known = self._alarms.get(alarm.id)
            row = take(known, t)
            if row is None:
                continue
            by_station = _listed(journal, self._changed_by_station, alarm.station_id)
            if known is not None:
                journal.remove(self._changed, (-known.changed_at, alarm.id))
                journal.remove(by_station, (-known.changed_at, alarm.id))
            journal.put(self._alarms, alarm.id, row)
            journal.insort(self._changed, (-row.changed_at, alarm.id))
            journal.insort(by_station, (-row.changed_at, alarm.id))

    def _alarm_page(self, q: Alarms) -> AlarmPage:
        order = (
            self._changed
            if q.station_id is None
            else self._changed_by_station.get(q.station_id, [])
        )
        first = 0 if q.after is None else bisect_right(order, (-q.after[0], q.after[1]))
        rows: list[AlarmRow] = []
        for negated, alarm_id in order[first:]:
            if q.since_ms is not None and -negated < q.since_ms:
                break  # the rest changed earlier still
            row = self._alarms[alarm_id].row()
            if matches(q, row):
                rows.append(row)
                if len(rows) > q.limit:
                    break
        page = rows[: q.limit]
        more = len(rows) > q.limit
        last = page[-1] if page else None
        return AlarmPage(
            page, (last.changed_at, last.state.alarm.id) if more and last is not None else None
        )

    def _alarm_history(self, q: AlarmHistory) -> list[RecordedTransition]:
        return [self._transitions[key] for *_, key in self._histories.get(q.alarm_id, [])]

    def _alarm_transitions(self, q: AlarmTransitions) -> list[AlarmTransition]:
        first = bisect_left(self._transition_times, (q.start_ms,))
        end = bisect_left(self._transition_times, (q.end_ms,))
        found = (self._transitions[key].transition for *_, key in self._transition_times[first:end])
        return [t for t in found if not q.actions or t.action in q.actions]

    def _transition_feed(self, q: TransitionFeed) -> list[RecordedTransition]:
        first = 0 if q.after is None else bisect_right(self._recorded, q.after)
        return [self._transitions[key] for _, key in self._recorded[first : first + q.limit]]

    def _checkpoint_rows(self, q: Checkpoints) -> list[Checkpoint]:
        rows = [r for key, r in self._checkpoints.items() if key[:2] == (q.group, q.topic)]
        return [checkpoint(r) for r in sorted(rows, key=lambda r: r[2])]

    def _latest_anomalies(self, q: LatestAnomalies) -> list[ReadingRow]:
        if q.station_id is None:
            keys = self._anomalies[-q.limit :]
        else:
            station = self._anomalies_by_station.get(q.station_id, [])
            keys = [(ts, q.station_id, seq) for ts, seq in station[-q.limit :]]
        return [self._readings[key] for key in reversed(keys)]

    def _anomaly_count(self, q: AnomalyCount) -> int:
        first = bisect_left(self._anomalies, (q.start_ms,))
        return max(0, bisect_left(self._anomalies, (q.end_ms,)) - first)

    def _station_readings(self, q: StationReadings) -> ReadingPage:
        keys = self._by_station.get(q.station_id, [])
        first = bisect_left(keys, (q.start_ms,))
        if q.after is not None:
            first = max(first, bisect_right(keys, q.after))
        stop = bisect_left(keys, (q.end_ms,))
        page = keys[first : min(stop, first + q.limit)]
        more = first + q.limit < stop
        return ReadingPage(
            rows=[self._readings[(ts, q.station_id, seq)] for ts, seq in page],
            next_cursor=page[-1] if more else None,
        )

    def _station_summaries(self, _q: Stations) -> list[StationSummary]:
        return [self._stations[s] for s in sorted(self._stations)]

    def _dead_letter_rows(self, q: DeadLetters) -> list[DeadLetterRow]:
        newest = sorted(self._dead_letters, key=lambda d: (d.received_at, d.id), reverse=True)
        return newest[: q.limit]

    def _fault_labels(self, q: FaultLabels) -> list[FaultLabel]:
        overlapping = [
            label
            for label in self._faults.values()
            if label.start_ts < q.end_ms
            and label.end_ts >= q.start_ms
            and (q.station_id is None or label.station_id == q.station_id)
        ]
        return sorted(overlapping, key=lambda f: (f.start_ts, f.station_id, f.sensor, f.kind))

    def _minute_aggregates(self, q: MinuteAggregates) -> pd.DataFrame:
        if q.station_id is None:
            first = bisect_left(self._minute_keys, (q.start_ms,))
            keys = self._minute_keys[first : bisect_left(self._minute_keys, (q.end_ms,))]
        else:
            station = self._minutes_by_station.get(q.station_id, [])
            first = bisect_left(station, (q.start_ms,))
            end = bisect_left(station, (q.end_ms,))
            keys = [(minute, q.station_id, sensor) for minute, sensor in station[first:end]]
        return aggregate_frame(
            (station, sensor, minute, *self._minutes[(minute, station, sensor)])
            for minute, station, sensor in keys
            if q.sensor in (None, sensor)
        )

    def _global_anomaly_rows(self, q: GlobalAnomalies) -> list[GlobalAnomaly]:
        first, last = (day_number(day) for day in q.days)
        start = bisect_left(self._global_anomaly_keys, (first,))
        end = bisect_left(self._global_anomaly_keys, (last + 1,))
        return [
            global_anomaly(self._global_anomalies[key])
            for key in self._global_anomaly_keys[start:end]
            if q.station_id in (None, key[1])
        ]

    def _global_anomaly_run_rows(self, q: GlobalAnomalyRuns) -> list[GlobalAnomalyRun]:
        first, last = (day_number(day) for day in q.days)
        start = bisect_left(self._global_anomaly_run_days, first)
        end = bisect_right(self._global_anomaly_run_days, last)
        return [
            global_anomaly_run(self._global_anomaly_runs[day])
            for day in self._global_anomaly_run_days[start:end]
        ]

    def _recent_readings(self, q: RecentReadings) -> pd.DataFrame:
        rows = [self._readings[key] for key in self._timeline[-q.limit :]]
        return recent_frame(
            [r.station_id for r in rows], [r.ts for r in rows], [r.values for r in rows], q.sensors
        )


def _listed(journal: _Journal, lists: dict[str, list[Any]], owner: str) -> list[Any]:
    """`owner`'s list in `lists`, added (empty) first when it has none."""
    if owner not in lists:
        journal.put(lists, owner, [])
    return lists[owner]


def _reading_rows(columns: BatchColumns, processed_at: int) -> list[ReadingRow]:
    names, which = columns.responsible_sensors()
    sensors, detectors = columns.sensors, columns.detectors
    return [
        ReadingRow(
            station_id=station,
            ts=ts,
            seq=seq,
            ts_assigned=assigned,
            received_at=received,
            processed_at=processed_at,
            values={name: v for name, v in zip(sensors, values, strict=True) if v == v},
            is_anomaly=anomaly,
            scores={name: s if s == s else None for name, s in zip(detectors, scores, strict=True)},
            sensors=list(names[w]),
            model_version=version,
        )
        for station, ts, seq, assigned, received, values, anomaly, scores, w, version in zip(
            columns.station_id.tolist(),
            columns.ts.tolist(),
            columns.seq.tolist(),
            columns.ts_assigned.tolist(),
            columns.received_at.tolist(),
            columns.values.tolist(),
            columns.is_anomaly.tolist(),
            columns.scores.tolist(),
            which.tolist(),
            columns.model_version.tolist(),
            strict=True,
        )
    ]
