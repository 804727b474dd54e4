"""Publishing a simulator's readings to a bus, paced by a clock."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np

from faultline.bus import Bus
from faultline.clock import Clock
from faultline.metrics import Metrics
from faultline.schema import FaultLabel
from faultline.simulate.simulator import Block, Simulator

_BLOCK_READINGS = 10_000  # readings per publish when catching up or running flat out
_STOP_POLL_S = 0.05  # longest sleep between looks at the stop event


def run_simulator(
    sim: Simulator,
    bus: Bus,
    topic: str,
    *,
    clock: Clock,
    rate_hz: float,
    stop: threading.Event,
    on_labels: Callable[[list[FaultLabel]], None] | None = None,
    max_ticks: int | None = None,
    metrics: Metrics | None = None,
) -> int:
    """Publish ticks of `sim` to `topic` until `stop` is set or `max_ticks` ticks are done.

    With `rate_hz` > 0 each station reports `rate_hz` times a second of `clock` time: tick k is
    stamped `start + k / rate_hz` and published once the clock reaches that time; ticks that fell
    due while the bus blocked (backpressure) are published together, with their own times. With
    `rate_hz` = 0 ticks are published as fast as possible in blocks, stamped with the clock's
    time when the block is made.

    `on_labels` receives each fault's label once its last reading is published; on return the
    faults still in progress are ended at the last tick and their labels delivered too, so every
    injected fault is labelled. Returns the number of readings published.
    """
    if not (math.isfinite(rate_hz) and rate_hz >= 0):
        raise ValueError(f"rate_hz must be a number >= 0, got {rate_hz}")
    if max_ticks is not None and max_ticks < 0:
        raise ValueError(f"max_ticks must be >= 0, got {max_ticks}")
    per_block = max(1, _BLOCK_READINGS // sim.stations)
    remaining = math.inf if max_ticks is None else max_ticks
    period_ms = 1000.0 / rate_hz if rate_hz > 0 else 0.0
    origin = clock.now_ms()
    done = 0
    published = 0

    def publish(block: Block) -> None:
        nonlocal published
        records = block.records()
        if records:
            bus.publish(topic, records)
            published += len(records)
            if metrics is not None:
                metrics.published.inc(len(records))
        if block.labels and on_labels is not None:
            on_labels(block.labels)

    try:
        while done < remaining and not stop.is_set():
            count = int(min(per_block, remaining - done))
            now = clock.now_ms()
            if period_ms == 0.0:
                publish(sim.block(np.full(count, now, np.int64)))
                done += count
                continue
            times = origin + np.floor(np.arange(done, done + count) * period_ms).astype(np.int64)
            due = int(np.searchsorted(times, now, side="right"))
            if due == 0:
                # At least a millisecond, so a manual clock always moves forward.
                wait_ms = max(int(times[0]) - now, 1)
                clock.sleep(min(wait_ms / 1000, _STOP_POLL_S))
                continue
            publish(sim.block(times[:due]))
            done += due
    finally:
        labels = sim.finish()
        if labels and on_labels is not None:
            on_labels(labels)
    return published
