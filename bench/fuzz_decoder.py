"""Long, random fuzzing of the decoder: the suite's properties (tests/unit/test_codec_fuzz.py),
unbounded in examples and not derandomised, for as long as asked.

    .venv/bin/python bench/fuzz_decoder.py --minutes 10

Prints what ran per property, and last one JSON line:
{"payloads": ..., "payloads_per_s": ..., "failures": 0}. Exit 1 on a failure, with hypothesis's
minimal failing example above.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultline.codec import ReadingDecoder
from faultline.config import load_settings
from tests.fuzz import PROPERTIES, variants
from tests.unit.test_codec_fuzz import check_total

ROUND = 200


def fuzz(
    make: Callable[[], st.SearchStrategy[bytes]], decoder: ReadingDecoder, minutes: float
) -> int:
    """Random rounds of ROUND examples of the property until `minutes` are up (hypothesis
    itself cannot be told to stop at a time); the payloads checked. Raises on a failure, after
    hypothesis has printed the minimal failing example."""
    seen = [0]

    @settings(
        max_examples=ROUND, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(make(), min_size=1, max_size=8), st.integers(0, 2**32))
    def prop(drawn: list[bytes], seed: int) -> None:
        payloads = [v for i, p in enumerate(drawn) for v in variants(p, seed + i)]
        seen[0] += len(payloads)
        check_total(decoder, payloads)

    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        prop()
    return seen[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="time per property")
    args = parser.parse_args()
    s = load_settings()
    decoder = ReadingDecoder(s.sensors, s.ingest)
    total, failures, began = 0, 0, time.perf_counter()
    for name, make in PROPERTIES.items():
        try:
            seen = fuzz(make, decoder, args.minutes)
        except Exception as exc:
            failures += 1
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            continue
        total += seen
        print(f"{name:24} {seen:>10,} payloads")
    rate = round(total / (time.perf_counter() - began))
    print(json.dumps({"payloads": total, "payloads_per_s": rate, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
