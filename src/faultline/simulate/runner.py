"""Publishing a simulator's readings to a bus, paced by a clock."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

from faultline.bus import Bus, BusClosed, BusError, PublishTooLarge, Record
from faultline.clock import Clock
from faultline.metrics import Metrics
from faultline.schema import FaultLabel
from faultline.simulate.simulator import Block, Simulator

_BLOCK_READINGS = 10_000  # readings per publish when catching up or running flat out
_STOP_POLL_S = 0.05  # longest sleep between looks at the stop event
_RETRY_FIRST_S = 0.1  # backoff after the bus refused a block, doubling up to _RETRY_MAX_S
_RETRY_MAX_S = 5.0

log = logging.getLogger(__name__)


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
    publish_timeout_s: float = 10.0,
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

    A bus that stays full (or unreachable) past `publish_timeout_s` does not end the run: the
    block is retried with backoff until it is taken or `stop` is set (publishes are all or
    nothing, so a retry duplicates nothing), and a block larger than the bus holds is split.
    Only a closed bus ends it, raising BusClosed.
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

    def deliver(records: Sequence[Record]) -> bool:
        """Publish until taken; False when stopped first."""
        nonlocal published
        backoff = _RETRY_FIRST_S
        while True:
            try:
                bus.publish(topic, records, publish_timeout_s)
                break
            except BusClosed:
                raise
            except PublishTooLarge:
                if len(records) == 1:
                    raise
                half = len(records) // 2
                return deliver(records[:half]) and deliver(records[half:])
            except BusError as exc:
                if metrics is not None:
                    metrics.simulator_bus_failures.inc()
                log.warning(
                    "bus refused %d readings, retrying in %.1f s: %s", len(records), backoff, exc
                )
                if not _pause(clock, stop, backoff):
                    return False
                backoff = min(backoff * 2, _RETRY_MAX_S)
        published += len(records)
        if metrics is not None:
            metrics.published.inc(len(records))
        return True

    def publish(block: Block) -> None:
        records = block.records()
        if records:
            deliver(records)
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


def _pause(clock: Clock, stop: threading.Event, seconds: float) -> bool:
    """Sleep `seconds` of `clock` time in short steps; False as soon as `stop` is set."""
    waited = 0.0
    while waited < seconds:
        if stop.is_set():
            return False
        step = min(_STOP_POLL_S, seconds - waited)
        clock.sleep(step)
        waited += step
    return not stop.is_set()
