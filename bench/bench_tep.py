"""The Tennessee Eastman protocol of ../shared/tep/README.md for one detector.

Replays fault_00 … fault_21 as 22 stations after 500 training rows each, sets the score limit
at the 99th percentile of fault_00's test readings (FAR 1 %, as the README's PCA baseline is
compared), and prints the detection rate of every fault at that limit and at the detector's own
threshold, then ONE JSON line. Usage: PYTHONPATH=src python bench/bench_tep.py [DETECTOR]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from faultline.evaluate.detectors import eval_detector
from faultline.evaluate.labelled_csv import read_labelled_csvs
from faultline.evaluate.replay import replay_after_training

UNDETECTABLE = (3, 9, 15)


def tep_root() -> Path:
    env = os.environ.get("FAULTLINE_SHARED")
    root = Path(env) / "tep" if env else Path(__file__).resolve().parents[1].parent / "shared/tep"
    if not (root / "fault_00.csv").is_file():
        raise SystemExit(f"TEP data not found in {root}")
    return root


def main(name: str) -> None:
    files = sorted(tep_root().glob("fault_*.csv"))
    labelled = read_labelled_csvs(files, "timestamp", "label")
    sensors = sorted({c for item in labelled for c in item.series.values.columns})
    detector = eval_detector(name).build(sensors, labelled[0].series.values.head(0))
    start = time.perf_counter()
    scored = replay_after_training(detector, [item.series for item in labelled], 500)
    seconds = time.perf_counter() - start
    limit = float(np.nanquantile(np.nan_to_num(scored[0].score, nan=-np.inf), 0.99))
    at_limit, at_threshold = {}, {}
    for item, s in zip(labelled[1:], scored[1:], strict=True):
        faulty = item.labels[500:]
        at_limit[item.series.name] = float(np.mean(s.score[faulty] > limit))
        at_threshold[item.series.name] = float(np.mean(s.is_anomaly[faulty]))
    far_limit = float(np.mean(scored[0].score > limit))
    far_threshold = float(np.mean(scored[0].is_anomaly))

    def means(fdr: dict[str, float]) -> tuple[float, float]:
        values = list(fdr.values())
        detectable = [v for i, v in enumerate(values, 1) if i not in UNDETECTABLE]
        return float(np.mean(values)), float(np.mean(detectable))

    print(f"detector {name}; limit {limit:.3g} for FAR {far_limit:.4f} on fault_00")
    print(f"{'fault':<10}{'FDR@1%':>8}{'FDR@thr':>9}")
    for fault in at_limit:
        print(f"{fault:<10}{at_limit[fault]:8.2f}{at_threshold[fault]:9.2f}")
    m21, m18 = means(at_limit)
    t21, t18 = means(at_threshold)
    print(f"mean 21 / 18 detectable at FAR 1 %: {m21:.3f} / {m18:.3f}")
    print(f"at its own threshold (FAR {far_threshold:.4f}): {t21:.3f} / {t18:.3f}")
    print(
        json.dumps(
            {
                "detector": name,
                "far_limit": far_limit,
                "fdr_mean_21": m21,
                "fdr_mean_18": m18,
                "far_threshold": far_threshold,
                "fdr_threshold_18": t18,
                "seconds": seconds,
                "per_fault": at_limit,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "relations")
