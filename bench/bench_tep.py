"""The Tennessee Eastman protocol of ../shared/tep/README.md for one detector.

Replays fault_00 … fault_21 as 22 stations after 500 training rows each, sets the score limit
at the 99th percentile of fault_00's test readings (FAR 1 %, as the README's PCA baseline is
compared), and prints the detection rate of every fault at that limit and at the detector's own
threshold beside textbook PCA's, the means over the 21 faults and the 18 detectable ones, the
replay's speed against `surprise` on the same readings, then ONE JSON line. Without the data it
says why and prints a JSON line with the reason.
Usage: PYTHONPATH=src python bench/bench_tep.py [DETECTOR] [--no-speed]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from faultline.detect.base import Scores
from faultline.evaluate.detectors import eval_detector
from faultline.evaluate.labelled_csv import LabelledSeries, read_labelled_csvs
from faultline.evaluate.replay import replay_after_training

TRAIN_ROWS = 500
UNDETECTABLE = (3, 9, 15)
# ../shared/tep/README.md: static PCA on the 500 training rows at FAR 1 %, faults 1-21.
TEXTBOOK_PCA = (
    1.00, 0.99, 0.01, 0.98, 0.25, 1.00, 1.00, 0.97, 0.02, 0.47, 0.65,
    0.99, 0.95, 1.00, 0.02, 0.36, 0.93, 0.91, 0.07, 0.52, 0.44,
)  # fmt: skip


def tep_root() -> Path | None:
    env = os.environ.get("FAULTLINE_SHARED")
    root = Path(env) / "tep" if env else Path(__file__).resolve().parents[1].parent / "shared/tep"
    return root if (root / "fault_00.csv").is_file() else None


def replay(name: str, labelled: list[LabelledSeries]) -> tuple[list[Scores], float]:
    """Every file as a station after its training rows; the seconds detection took, the
    faster of two runs (the first also compiles a numba kernel)."""
    sensors = sorted({c for item in labelled for c in item.series.values.columns})
    best, scored = np.inf, []
    for _ in range(2):
        detector = eval_detector(name).build(sensors, labelled[0].series.values.head(0))
        start = time.perf_counter()
        scored = replay_after_training(detector, [item.series for item in labelled], TRAIN_ROWS)
        best = min(best, time.perf_counter() - start)
    return scored, best


def means(fdr: list[float]) -> tuple[float, float]:
    detectable = [v for i, v in enumerate(fdr, 1) if i not in UNDETECTABLE]
    return float(np.mean(fdr)), float(np.mean(detectable))


def main(name: str, speed: bool) -> None:
    root = tep_root()
    if root is None:
        reason = "TEP data not found in ../shared/tep (set FAULTLINE_SHARED)"
        print(f"skipped: {reason}")
        print(json.dumps({"detector": name, "skipped": reason}))
        return
    labelled = read_labelled_csvs(sorted(root.glob("fault_*.csv")), "timestamp", "label")
    scored, seconds = replay(name, labelled)
    normal = scored[0]
    limit = float(np.quantile(np.nan_to_num(normal.score, nan=-np.inf), 0.99))
    at_limit, at_threshold = [], []
    for item, s in zip(labelled[1:], scored[1:], strict=True):
        faulty = item.labels[TRAIN_ROWS:]
        at_limit.append(float(np.mean(s.score[faulty] > limit)))
        at_threshold.append(float(np.mean(s.is_anomaly[faulty])))
    far_limit = float(np.mean(normal.score > limit))
    far_threshold = float(np.mean(normal.is_anomaly))
    before_onset = float(
        np.mean(
            np.concatenate(
                [
                    s.is_anomaly[~i.labels[TRAIN_ROWS:]]
                    for i, s in zip(labelled[1:], scored[1:], strict=True)
                ]
            )
        )
    )

    print(f"detector {name}; limit {limit:.3g} for FAR {far_limit:.4f} on fault_00")
    print(f"{'fault':<8}{'FDR@1%':>8}{'FDR@thr':>9}{'PCA@1%':>8}")
    for n, (a, t, p) in enumerate(zip(at_limit, at_threshold, TEXTBOOK_PCA, strict=True), 1):
        mark = " (undetectable)" if n in UNDETECTABLE else ""
        print(f"{n:<8}{a:8.2f}{t:9.2f}{p:8.2f}{mark}")
    m21, m18 = means(at_limit)
    t21, t18 = means(at_threshold)
    p21, p18 = means(list(TEXTBOOK_PCA))
    print(f"mean 21 / 18 detectable at FAR 1 %: {m21:.3f} / {m18:.3f}", end=" ")
    print(f"(textbook PCA {p21:.2f} / {p18:.2f})")
    print(
        f"at its own threshold: {t21:.3f} / {t18:.3f}, FAR {far_threshold:.4f} on fault_00, "
        f"{before_onset:.4f} on the other files' readings before their fault"
    )
    readings = sum(len(item.series) for item in labelled)
    record: dict[str, object] = {
        "detector": name,
        "limit": limit,
        "far_limit": far_limit,
        "fdr_mean_21": m21,
        "fdr_mean_18": m18,
        "far_threshold": far_threshold,
        "far_before_onset": before_onset,
        "fdr_threshold_21": t21,
        "fdr_threshold_18": t18,
        "readings_per_s": readings / seconds,
        "per_fault": dict(zip(range(1, 22), at_limit, strict=True)),
        "per_fault_threshold": dict(zip(range(1, 22), at_threshold, strict=True)),
    }
    if speed and name != "surprise":
        _, reference = replay("surprise", labelled)
        record["surprise_readings_per_s"] = readings / reference
        record["speed_ratio_to_surprise"] = reference / seconds
        print(
            f"speed: {readings / seconds:,.0f} readings/s ({len(labelled)} stations of "
            f"{len(labelled[0].series.values.columns)} sensors), surprise "
            f"{readings / reference:,.0f}/s on the same replay: ratio {reference / seconds:.2f}"
        )
    print(json.dumps(record))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "relations", speed="--no-speed" not in sys.argv)
