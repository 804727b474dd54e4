"""Running the detector pipeline so that a reading it cannot process costs that reading alone.

Both engines call this instead of `DetectorPipeline.run`: one reading that makes a detector raise
(a bug met by an input nobody foresaw) must not stop detection for every station, nor fail a
Spark job on every restart. A batch that raises is run once more (a transient failure such as a
memory shortage is not the input's fault), then split in halves, recursively, until the readings
that still raise on their own are found; those are refused with the reason and everything else
gets its verdict, in order. This relies on `DetectorPipeline.run` changing no state when it
raises, so each piece is learned exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from faultline.detect.pipeline import DetectorPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Isolated:
    """The verdicts of the readings detection could process, and those it could not."""

    verdicts: pd.DataFrame  # the pipeline's output for the rows not refused, in their order
    refused: list[tuple[int, str]]  # (row position in the input frame, why)


def run_isolating(
    pipeline: DetectorPipeline,
    frame: pd.DataFrame,
    on_split: Callable[[], None] | None = None,
) -> Isolated:
    """`pipeline.run(frame)`, refusing only the readings that make it raise on their own."""
    for attempt in (1, 2):
        try:
            return Isolated(pipeline.run(frame), [])
        except Exception as exc:
            if len(frame) == 0:
                raise
            log.warning(
                "detection failed on a batch of %d (attempt %d): %s", len(frame), attempt, exc
            )
    pieces: list[pd.DataFrame] = []
    refused: list[tuple[int, str]] = []
    _bisect(pipeline, frame, 0, pieces, refused, on_split)
    verdicts = pd.concat(pieces, ignore_index=True) if pieces else pipeline.run(frame.iloc[:0])
    return Isolated(verdicts, refused)


def _bisect(
    pipeline: DetectorPipeline,
    frame: pd.DataFrame,
    offset: int,
    pieces: list[pd.DataFrame],
    refused: list[tuple[int, str]],
    on_split: Callable[[], None] | None,
) -> None:
    """Run the halves of `frame` (known to raise as a whole) in order, recursing into a failing
    half; `offset` is `frame`'s first row position in the caller's input."""
    if on_split is not None:
        on_split()
    half = len(frame) // 2
    for start, part in ((0, frame.iloc[:half]), (half, frame.iloc[half:])):
        try:
            pieces.append(pipeline.run(part))
        except Exception as exc:
            if len(part) == 1:
                reason = f"detection failed on this reading: {type(exc).__name__}: {exc}"
                log.error("refusing the reading at %d: %s", offset + start, reason)
                refused.append((offset + start, reason))
            else:
                _bisect(
                    pipeline, part.reset_index(drop=True), offset + start, pieces, refused, on_split
                )
