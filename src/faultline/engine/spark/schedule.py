"""The Spark job's model schedule: which registered model version scores which micro-batches.

The in-process engine swaps between two batches of one thread (engine/swap.py). A Spark
micro-batch is scored by several Python workers at once (one task a bucket of stations), and a
micro-batch interrupted by a crash is computed again after the restart; if each worker followed
the champion alias itself, the buckets of one micro-batch could score with different versions,
and a replayed micro-batch with another version than its first attempt, whose rows may already
be stored. So the driver decides, once per micro-batch id, and writes the decision down; the
workers only look it up:

* at the start of micro-batch N (`foreachBatch`, before the lazy batch's detection runs), the
  driver appends {"from_batch": N, "version", "run_id"} when the champion it has loaded (its
  ChampionWatcher's) differs from the schedule's newest entry, and records N as started;
* a micro-batch id no greater than the last started one is a replay: it gets no entry, so it
  scores with the version its first attempt used;
* a worker scoring micro-batch N (Spark hands the id to every task, see
  `stages.current_batch_id`) takes the entry with the largest `from_batch` <= N.

The file lives in the query's checkpoint directory: it belongs to the checkpoint's batch ids and
goes with them (a new checkpoint starts with the champion of its first micro-batch). It is
rewritten whole, atomically (a temporary file, fsync, rename), so a worker reads either the old
schedule or the new one. The workers must see the directory, as they see the registry's
artifacts: a local directory for a local Spark, a shared mount on a cluster.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faultline.metrics import Metrics
from faultline.models.base import LoadedModel

log = logging.getLogger(__name__)

SCHEDULE_FILE = "faultline-model-schedule.json"
_FORMAT = 1


def schedule_path(checkpoint_dir: Path) -> Path:
    """Where a query checkpointed in `checkpoint_dir` keeps its model schedule."""
    return Path(checkpoint_dir).resolve() / SCHEDULE_FILE


@dataclass(frozen=True, slots=True)
class Entry:
    """From micro-batch `from_batch` on, registered version `version` (MLflow run `run_id`)."""

    from_batch: int
    version: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """The entries in `from_batch` order, and the last micro-batch the driver started."""

    started: int
    entries: tuple[Entry, ...]

    def entry_for(self, batch_id: int) -> Entry | None:
        """The entry in force for micro-batch `batch_id`; None before the first entry."""
        at = bisect.bisect_right([e.from_batch for e in self.entries], batch_id)
        return self.entries[at - 1] if at else None

    @property
    def latest(self) -> Entry | None:
        return self.entries[-1] if self.entries else None

    def begin(self, batch_id: int, version: str, run_id: str) -> Schedule:
        """The schedule once micro-batch `batch_id` starts while the driver's champion is
        `version`: unchanged for a replay (`batch_id` <= `started`), else started there, with a
        new entry if the version changed."""
        if batch_id <= self.started:
            return self
        entries = self.entries
        latest = self.latest
        if latest is None or latest.version != version or latest.run_id != run_id:
            entries = (*entries, Entry(batch_id, version, run_id))
        return Schedule(batch_id, entries)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "started": self.started,
                "entries": [
                    {"from_batch": e.from_batch, "version": e.version, "run_id": e.run_id}
                    for e in self.entries
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise ValueError(f"model schedule of unknown format {data.get('format')!r}")
        entries = tuple(
            Entry(int(e["from_batch"]), str(e["version"]), str(e["run_id"]))
            for e in data["entries"]
        )
        if any(a.from_batch >= b.from_batch for a, b in itertools.pairwise(entries)):
            raise ValueError("model schedule entries are not in micro-batch order")
        return cls(int(data["started"]), entries)


# Before the first micro-batch: nothing started, no entry.
EMPTY = Schedule(-1, ())


def read_schedule(path: Path) -> Schedule | None:
    """The schedule at `path`, or None if there is none (a checkpoint older than schedules)."""
    try:
        return Schedule.from_json(Path(path).read_text())
    except FileNotFoundError:
        return None


def write_schedule(path: Path, schedule: Schedule) -> None:
    """Replace the schedule at `path` whole: readers see the old file or the new, never part.

    The file is synced before the rename and the directory after it, so the record that a
    micro-batch started is on disk before any of its rows can be: after a power loss a replay
    still finds the version it must use.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(schedule.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class ScheduleKeeper:
    """The driver's side: `begin(N)` at the start of each micro-batch's `foreachBatch` call.

    `champion` is the model the driver has loaded for the alias (a ChampionWatcher's, loaded in
    its own thread, so a version is proven to load before any worker is told to use it). The
    driver is the schedule's only writer, so the file is read once, here, and then kept.
    """

    def __init__(
        self, path: Path, champion: Callable[[], LoadedModel], metrics: Metrics, name: str
    ) -> None:
        self._path = Path(path)
        self._champion = champion
        self._metrics = metrics
        self._name = name
        self._schedule = read_schedule(self._path) or EMPTY
        latest = self._schedule.latest
        # The version the job scores with until its next micro-batch says otherwise.
        self._run_id = champion().info.run_id if latest is None else latest.run_id
        metrics.model_info.labels(name=name, version=self._run_id).set(1)

    def begin(self, batch_id: int) -> Entry | None:
        """Record that micro-batch `batch_id` starts; the entry it scores with."""
        info = self._champion().info
        schedule = self._schedule.begin(batch_id, info.version, info.run_id)
        if schedule is not self._schedule:
            write_schedule(self._path, schedule)
            self._schedule = schedule
        entry = schedule.entry_for(batch_id)
        # Only a replay of a micro-batch before the first entry (a checkpoint older than
        # schedules) finds none; its workers fall back to the alias, as such a job always did.
        if entry is not None and entry.run_id != self._run_id:
            self._swapped(entry)
        return entry

    def _swapped(self, entry: Entry) -> None:
        info = self._metrics.model_info
        info.remove(self._name, self._run_id)
        info.labels(name=self._name, version=entry.run_id).set(1)
        log.info(
            "spark engine: scoring with model %s version %s (run %s) from micro-batch %d on, "
            "was run %s",
            self._name,
            entry.version,
            entry.run_id,
            entry.from_batch,
            self._run_id,
        )
        self._run_id = entry.run_id


class ScheduleReader:
    """The workers' side: the schedule at `path`, read again when the file was replaced (its
    inode, modification time or size changed) or when it predates the micro-batch asked about.

    The second test is the one correctness rests on: the driver records micro-batch N as started
    before any task of N runs, so a schedule whose `started` is below N is stale, whatever the
    file's times say (a reused inode and a coarse clock can make two versions look alike).
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._schedule: Schedule | None = None
        self._lock = threading.Lock()

    def entry_for(self, batch_id: int) -> Entry | None:
        """The entry in force for micro-batch `batch_id`; None without a schedule or before
        its first entry."""
        with self._lock:
            try:
                stat = os.stat(self._path)
            except FileNotFoundError:
                self._signature = self._schedule = None
                return None
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            stale = self._schedule is not None and self._schedule.started < batch_id
            if signature != self._signature or stale:
                self._schedule = read_schedule(self._path)
                self._signature = signature
            return None if self._schedule is None else self._schedule.entry_for(batch_id)
