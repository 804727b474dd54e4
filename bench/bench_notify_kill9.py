"""`kill -9` of `faultline up` while notifications are pending: is any transition lost?

`faultline up --no-simulator` runs with one webhook receiver, a local HTTP server of this
script that checks each request's signature and records its Idempotency-Key; it answers
slowly (`--receiver-ms` per request) and is down (refusing connections) before every other
kill, so notifications pile up. Alarm transitions (raise, ack, clear of a new alarm in three
batches) are written straight into the process's SQLite store (`data/faultline.db`, through
faultline.store's SqliteStore, as the engine and the API write them), `--rate` batches per
second, so that how many transitions are pending at each kill is the bench's to choose rather
than the detectors'.
The process is killed with SIGKILL `--kills` times, each time while transitions recorded are
not yet delivered, and started again on the same data. At the end the writing stops, the
notifier drains, and every transition in the store's log is looked for among the keys the
receiver got: missing ones are lost; repeats (at least once allows them) and alarms whose
first deliveries came out of order are counted too.

    .venv/bin/python bench/bench_notify_kill9.py [--kills 5] [--rate 40]

Prints the figures and one JSON line last. Exit 1 when a transition was lost, a signature was
wrong, or an alarm's transitions were first delivered out of order.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from faultline.alarm_schema import ANOMALY, AlarmKey, AlarmTransition
from faultline.notify import verify
from faultline.schema import WriteBatch, empty_readings
from faultline.store import StoreError, TransitionFeed, open_store
from tests.faults.durability import SMALL_MODEL, Faultline, free_port, summary_line

SECRET = "bench-notify-secret"
SENSORS = ("temperature", "humidity", "noise_level")


class Receiver:
    """The webhook: checks signatures, records keys in arrival order; can be taken down."""

    def __init__(self, delay_s: float) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.keys: list[str] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay_s)
                good = verify(
                    SECRET.encode(),
                    self.headers.get("X-Faultline-Timestamp", ""),
                    body,
                    self.headers.get("X-Faultline-Signature", ""),
                    int(time.time() * 1000),
                )
                with receiver.lock:
                    if good:
                        receiver.keys.append(self.headers["Idempotency-Key"])
                    else:
                        receiver.bad_signatures += 1
                self.send_response(200 if good else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def received(self) -> list[str]:
        with self.lock:
            return list(self.keys)


class Writer:
    """Writes alarms into the store: each a raise, an ack and a clear, in successive batches,
    one batch every 1/rate s."""

    def __init__(self, db: Path, rate: float) -> None:
        self.store = open_store(f"sqlite:///{db}")
        self.rate = rate
        self.written = 0
        self.failed = 0
        self._activation: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.store.close()

    def _run(self) -> None:
        """Batch n: the raise of alarm n, the ack of alarm n-1, the clear of alarm n-2."""
        n = 0
        batch: list[AlarmTransition] = []
        while not self._stop.wait(1 / self.rate):
            now = int(time.time() * 1000)
            if not batch:  # else the batch that failed, again
                batch = [self._transition(n, "raise", now)]
                batch += [self._transition(n - 1, "ack", now)] if n >= 1 else []
                batch += [self._transition(n - 2, "clear", now)] if n >= 2 else []
                n += 1
            try:
                self.store.write(
                    WriteBatch(
                        sensors=SENSORS,
                        detectors=(),
                        readings=empty_readings(SENSORS),
                        processed_at=now,
                        alarm_transitions=batch,
                    )
                )
            except StoreError:
                self.failed += 1  # e.g. the store busy past its timeout: write it again
                continue
            self.written += len(batch)
            batch = []

    def _transition(self, n: int, action: str, now: int) -> AlarmTransition:
        key = AlarmKey(f"bench-{n:06d}", "temperature", ANOMALY)
        # The clear is an alarm's last transition: its activation is not needed after it.
        activation = (
            self._activation.pop(n) if action == "clear" else self._activation.setdefault(n, now)
        )
        step = ("raise", "ack", "clear").index(action)
        return AlarmTransition(
            key,
            action,  # type: ignore[arg-type]
            activation + step,
            activation,
            actor="bench" if action == "ack" else "engine",
            severity="medium",
        )


def logged_keys(db: Path) -> list[tuple[str, str]]:
    """(alarm id, key) of every transition in the store's log, in feed order."""
    store = open_store(f"sqlite:///{db}")
    out: list[tuple[str, str]] = []
    after = None
    try:
        while True:
            page = store.query(TransitionFeed(after=after, limit=1000))
            out += [(r.transition.alarm.id, r.transition.key) for r in page]
            if len(page) < 1000:
                return out
            after = (page[-1].recorded_at, page[-1].transition.key)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--rate", type=float, default=10.0, help="batches written per second")
    parser.add_argument("--receiver-ms", type=float, default=5.0, help="receiver's answer time")
    parser.add_argument("--up-min-s", type=float, default=3.0, help="least time between kills")
    parser.add_argument("--up-max-s", type=float, default=8.0, help="most time between kills")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary directory")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-notify-kill9-"))
    receiver = Receiver(args.receiver_ms / 1000)
    receiver.up()
    receivers = [
        {
            "name": "bench",
            "kind": "webhook",
            "url": f"http://127.0.0.1:{receiver.port}/hook",
            "secret": SECRET,
            "timeout_s": 2,
        }
    ]
    env = {
        **SMALL_MODEL,
        "FAULTLINE_NOTIFY__RECEIVERS": json.dumps(receivers),
        "FAULTLINE_NOTIFY__POLL_S": "0.2",
        "FAULTLINE_NOTIFY__BACKOFF_INITIAL_S": "0.2",
        "FAULTLINE_NOTIFY__BACKOFF_MAX_S": "2",
    }
    app = Faultline(root / "data", env=env)
    took = app.start()
    print(f"faultline up serving at {app.url} after {took:.1f} s (log {app.log_path})")
    db = root / "data" / "faultline.db"
    writer = Writer(db, args.rate).start()
    pending_at_kill: list[int] = []
    outages = 0
    for i in range(args.kills):
        time.sleep(rng.uniform(args.up_min_s, args.up_max_s))
        if i % 2 == 0:  # every other kill comes while the receiver has been down a while
            receiver.down()
            outages += 1
            time.sleep(rng.uniform(0.5, 2.0))
        pending = writer.written - len(set(receiver.received()))
        app.kill()
        pending_at_kill.append(pending)
        if receiver.server is None:
            receiver.up()
        took = app.start()
        print(f"kill {i + 1}/{args.kills}: {pending} transitions pending; serving in {took:.1f} s")
    writer.stop()

    logged = logged_keys(db)
    wanted = {key for _, key in logged}
    # Drain: until everything arrived, or nothing more did for 30 s (what is missing then is
    # lost), or 10 minutes passed.
    began = last_change = time.monotonic()
    seen = -1
    while not wanted <= set(receiver.received()) and time.monotonic() - began < 600:
        if len(receiver.received()) != seen:
            seen, last_change = len(receiver.received()), time.monotonic()
        elif time.monotonic() - last_change > 30:
            break
        time.sleep(0.5)
    drained_s = time.monotonic() - began
    app.stop()
    got = receiver.received()
    receiver.down()

    first_seen: dict[str, int] = {}
    for i, key in enumerate(got):
        first_seen.setdefault(key, i)
    by_alarm: dict[str, list[str]] = {}
    for alarm_id, key in logged:
        by_alarm.setdefault(alarm_id, []).append(key)
    order = ("raise", "ack", "clear")
    out_of_order = sum(
        1
        for keys in by_alarm.values()
        if all(k in first_seen for k in keys)
        and sorted(keys, key=lambda k: first_seen[k])
        != sorted(keys, key=lambda k: order.index(k.split("|")[4]))
    )
    counts = Counter(got)
    figures = {
        "kills": args.kills,
        "receiver_outages": outages,
        "pending_at_kills": pending_at_kill,
        "transitions": len(wanted),
        "delivered": len(wanted & set(got)),
        "lost": len(wanted - set(got)),
        "repeats": sum(c - 1 for c in counts.values()),
        "out_of_order_alarms": out_of_order,
        "bad_signatures": receiver.bad_signatures,
        "writer_retries": writer.failed,
        "drain_s": round(drained_s, 1),
    }
    print(
        f"{figures['transitions']} transitions in the store, {figures['delivered']} delivered, "
        f"{figures['lost']} lost, {figures['repeats']} delivered more than once (at least once), "
        f"{out_of_order} alarms out of order, {receiver.bad_signatures} bad signatures"
    )
    print(summary_line(figures))
    return 1 if figures["lost"] or out_of_order or receiver.bad_signatures else 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
