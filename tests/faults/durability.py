"""What the durability tests and benchmarks share: a `faultline up` process to kill, a paced
HTTP load that remembers what was acknowledged, and a count of the store by key.

The figures of issue 9 are counted, never timed: every reading carries a unique key (station_id,
ts, seq), the load keeps the batches the API answered 2xx for, and after the faults the store
itself is read (the SQLite file, or PostgreSQL) to find acknowledged keys missing (lost), keys
stored more than once, and station counters that grew by more than the rows they summarise
(a replay counted twice). `bench/bench_kill9.py`, `bench/bench_outage.py` and
`bench/bench_soak.py` run these at full length; tests/faults runs them bounded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from faultline.tokens import Role, TokenStore

REPO = Path(__file__).resolve().parents[2]
SVC = REPO / "scripts" / "services" / "svc.py"
PREFIX = "dur-"
# A small model keeps the first start (which trains one) to seconds; the figures are about
# what survives a fault, not about the forest.
SMALL_MODEL = {"FAULTLINE_MODEL__N_ESTIMATORS": "50", "FAULTLINE_MODEL__TRAIN_SAMPLES": "2000"}

Key = tuple[str, int, int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Faultline:
    """`faultline up --no-simulator` as a subprocess on a fixed data dir and port, so that it
    can be killed and started again on the same data."""

    def __init__(
        self,
        data_dir: Path,
        *,
        store_url: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_url = store_url
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), self.env.get("PYTHONPATH", "")) if p
        )
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-faultline.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Writes need a token: made in the data dir's token store before the first start, so
        # `faultline up` finds it (and prints no first admin token).
        tokens = TokenStore(data_dir / "tokens.db")
        self.token = tokens.create(Role.INGEST, "durability-load")[0]
        tokens.close()

    def start(self, timeout_s: float = 180.0) -> float:
        """Start it and wait until it serves; the seconds that took."""
        began = time.monotonic()
        cmd = [sys.executable, "-m", "faultline.cli", "up", "--no-simulator"]
        cmd += ["--data-dir", str(self.data_dir), "--port", str(self.port)]
        env = dict(self.env)
        if self.store_url:
            env["FAULTLINE_STORE_URL"] = self.store_url
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"faultline up exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code in (200, 503):
                    return time.monotonic() - began
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"faultline up did not serve within {timeout_s:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, no saved state."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def health(self) -> tuple[int, dict[str, object]]:
        reply = httpx.get(f"{self.url}/api/health", timeout=5)
        return reply.status_code, reply.json()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Load:
    """Posts batches of `batch` readings to POST /api/readings at `rate` readings/s, each with
    a unique key, from `senders` threads; remembers which batches got a 2xx.

    A batch that failed (connection refused while Faultline is down, 503, timeout) is sent
    again, with the same keys, as a client that wants its data kept would: so a retry after an
    answer that was lost on the way also tests that nothing is stored twice. Batch n holds seqs
    n*batch ... n*batch+batch-1, station PREFIX + seq % stations, all at the ts of its making.
    """

    url: str
    token: str  # an ingest token (Faultline.token)
    rate: float = 5000.0
    batch: int = 100
    stations: int = 50
    senders: int = 4
    retry_after_s: float = 0.25
    remember: bool = True  # the soak does not need the keys
    ts_of: dict[int, int] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    acked_readings: int = 0
    made: int = 0

    def __post_init__(self) -> None:
        self._work: queue.Queue[int] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(9)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._pace, daemon=True)]
        self._threads += [
            threading.Thread(target=self._send, daemon=True) for _ in range(self.senders)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def body(self, n: int) -> bytes:
        ts = self.ts_of[n]
        base = n * self.batch
        g = self._rng.gauss
        return json.dumps(
            [
                {
                    "station_id": f"{PREFIX}{(base + i) % self.stations}",
                    "ts": ts,
                    "seq": base + i,
                    "values": {
                        "temperature": round(25 + g(0, 2), 2),
                        "humidity": round(60 + g(0, 3), 2),
                        "noise_level": round(50 + g(0, 3), 2),
                    },
                }
                for i in range(self.batch)
            ]
        ).encode()

    def key(self, seq: int) -> Key:
        return (f"{PREFIX}{seq % self.stations}", self.ts_of[seq // self.batch], seq)

    def acked_keys(self) -> set[Key]:
        with self._lock:
            batches = sorted(self.acked)
        return {self.key(n * self.batch + i) for n in batches for i in range(self.batch)}

    def snapshot(self) -> tuple[float, int, int]:
        """(monotonic time, readings acknowledged, readings offered) for rates over a phase."""
        with self._lock:
            return time.monotonic(), self.acked_readings, self.made * self.batch

    def answers(self) -> Counter[str]:
        """How often each answer (status code or exception) came back so far."""
        with self._lock:
            return Counter(self.outcomes)

    def _pace(self) -> None:
        per_s = self.rate / self.batch
        began = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = began + n / per_s
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self.ts_of[n] = int(time.time() * 1000)
            with self._lock:
                self.made = n + 1
            self._work.put(n)
            n += 1

    def _send(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    n = self._work.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    reply = client.post(
                        f"{self.url}/api/readings",
                        content=self.body(n),
                        headers={
                            "content-type": "application/json",
                            "authorization": f"Bearer {self.token}",
                        },
                    )
                    outcome = str(reply.status_code)
                    ok = 200 <= reply.status_code < 300
                except httpx.HTTPError as exc:
                    outcome, ok = type(exc).__name__, False
                with self._lock:
                    self.outcomes[outcome] += 1
                    if ok:
                        self.acked_readings += self.batch
                        if self.remember:
                            self.acked.add(n)
                        else:
                            self.ts_of.pop(n, None)
                if not ok:
                    # Back off, as a client should: a storm of retries while Faultline is down
                    # would take the CPU its restart needs.
                    self._work.put(n)
                    self._stop.wait(self.retry_after_s)


@dataclass(frozen=True)
class StoredRows:
    """Our readings as the store holds them: one entry per row, so a duplicate shows."""

    rows: list[Key]
    station_counter: int  # the sum of the stations table's reading counts for our stations
    dead_letters: int  # dead letters whose payload is one of ours


def sqlite_rows(db: Path) -> StoredRows:
    """Read the SQLite store's file directly (read-only), not through Faultline."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        like = f"{PREFIX}%"
        rows = conn.execute(
            "SELECT station_id, ts, seq FROM readings WHERE station_id LIKE ?", (like,)
        ).fetchall()
        counter = conn.execute(
            "SELECT COALESCE(SUM(readings), 0) FROM stations WHERE station_id LIKE ?", (like,)
        ).fetchone()[0]
        letters = conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE CAST(payload AS TEXT) LIKE ?",
            (f'%"{PREFIX}%',),
        ).fetchone()[0]
    finally:
        conn.close()
    return StoredRows([(s, int(t), int(q)) for s, t, q in rows], int(counter), int(letters))


def postgres_rows(url: str) -> StoredRows:
    import psycopg

    like = f"{PREFIX}%"
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT station_id, ts, seq FROM readings WHERE station_id LIKE %s", (like,)
        ).fetchall()
        counter = conn.execute(
            "SELECT COALESCE(SUM(readings), 0) FROM stations WHERE station_id LIKE %s", (like,)
        ).fetchone()
        letters = conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE convert_from(payload, 'UTF8') LIKE %s",
            (f'%"{PREFIX}%',),
        ).fetchone()
    assert counter is not None and letters is not None
    return StoredRows([(s, int(t), int(q)) for s, t, q in rows], int(counter[0]), int(letters[0]))


@dataclass(frozen=True)
class Tally:
    acked: int
    stored: int
    lost: int  # acknowledged, not in the store
    duplicated: int  # rows beyond the first of a key
    overcounted: int  # station counters minus rows: a replay counted twice
    unacked_stored: int  # stored though the client never got a 2xx (at-least-once: allowed)
    dead_lettered: int  # our readings are all valid: any dead letter of ours is a fault

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def tally(acked: set[Key], stored: StoredRows) -> Tally:
    rows = Counter(stored.rows)
    keys = set(rows)
    return Tally(
        acked=len(acked),
        stored=len(keys),
        lost=len(acked - keys),
        duplicated=sum(c - 1 for c in rows.values()),
        overcounted=stored.station_counter - len(stored.rows),
        unacked_stored=len(keys - acked),
        dead_lettered=stored.dead_letters,
    )


def drain(
    acked: set[Key], read: Callable[[], StoredRows], timeout_s: float, settle_s: float = 10.0
) -> StoredRows:
    """Read the store until every acknowledged key is there, or it stopped growing for
    `settle_s` (what is missing then is lost), or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while True:
        stored = read()
        keys = set(stored.rows)
        if acked <= keys or time.monotonic() > deadline:
            return stored
        if len(keys) != last:
            last, since = len(keys), time.monotonic()
        elif time.monotonic() - since > settle_s:
            return stored
        time.sleep(0.5)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PrivatePostgres:
    """A PostgreSQL of our own, started and stopped through scripts/services/svc.py, so that
    stopping it never touches the server everybody else's tests use."""

    def __init__(self, services_dir: Path, port_offset: int) -> None:
        self.services_dir = services_dir
        self.env = {
            **os.environ,
            "FAULTLINE_SERVICES_DIR": str(services_dir),
            "FAULTLINE_SERVICES_PORT_OFFSET": str(port_offset),
        }
        self.url = f"postgresql://faultline@127.0.0.1:{15432 + port_offset}/faultline"

    def svc(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, str(SVC), *args, "postgres"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"svc.py {' '.join(args)} postgres: {done.stdout}{done.stderr}")

    def start(self) -> None:
        # As root svc.py runs PostgreSQL as `postgres`, which must be able to reach its dir.
        self.services_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.services_dir, *self.services_dir.parents):
            if d == Path("/"):
                break
            if d.stat().st_uid == os.geteuid():
                d.chmod(d.stat().st_mode | 0o755)
        self.svc("start")

    def stop(self) -> None:
        self.svc("stop")

    def schema_url(self, schema: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        return f"{self.url}?options=-csearch_path%3D{schema}"


class SmallDisk:
    """A tmpfs of `size_mb` mounted at `path` (root only), which `fill` fills to the last byte
    and `free` empties again: a full disk under a live Faultline, without touching the host's."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.filler = path / "filler"

    @staticmethod
    def mount_error() -> str | None:
        """Why a tmpfs cannot be mounted here, or None."""
        if os.geteuid() != 0:
            return "mounting a small tmpfs for a full disk needs root"
        return None

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)

    def fill(self) -> int:
        """Write until ENOSPC; the bytes written."""
        written = 0
        with open(self.filler, "wb", buffering=0) as f:
            for chunk in (1 << 20, 4096, 1):
                block = b"\0" * chunk
                try:
                    while True:
                        written += f.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


def rate_between(a: tuple[float, int, int], b: tuple[float, int, int]) -> float:
    """Readings acknowledged per second between two snapshots."""
    return (b[1] - a[1]) / max(b[0] - a[0], 1e-9)


def summary_line(figures: dict[str, object]) -> str:
    """The one JSON line a benchmark prints last."""
    return json.dumps(figures, sort_keys=True)
