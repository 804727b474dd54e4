"""Point and event metrics, checked against counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from faultline.evaluate.classification import classify, count, runs


def b(text: str) -> np.ndarray:
    return np.array([c == "1" for c in text])


def test_runs_are_maximal_and_inclusive() -> None:
    assert runs(b("0110001")) == [(1, 2), (6, 6)]
    assert runs(b("000")) == []


def test_counts_of_one_file() -> None:
    labels = b("0011110000110")
    flagged = b("0100110000001")
    # Rows: tp = rows 4, 5; fp = rows 1, 12; fn = rows 2, 3, 10, 11; tn = the other 5.
    # Events: 2..5 (found by 4), 10..11 (missed). Alarms: 1 (false), 4..5 (true), 12 (false).
    c = count(labels, flagged)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 2, 4, 5)
    assert (c.events, c.events_found, c.alarms, c.alarms_true) == (2, 1, 3, 1)


def test_metrics_pool_rows_of_all_files() -> None:
    # File 1: labels 0110, flagged 0100 -> tp 1, fn 1, tn 2; events 1/1 found; alarms 1/1 true.
    # File 2: labels 0000, flagged 0011 -> fp 2, tn 2; alarms 1, 0 true.
    # Pooled: precision 1/3, recall 1/2, F1 = 2(1/3)(1/2)/(5/6) = 0.4; FAR 2/6; MAR 1/2.
    # Events: precision 1/2, recall 1/1, F1 = 2/3. An average of per-file F1s would differ.
    got = classify([b("0110"), b("0000")], [b("0100"), b("0011")])
    assert got.f1_point == pytest.approx(0.4)
    assert got.f1_event == pytest.approx(2 / 3)
    assert got.far == pytest.approx(1 / 3)
    assert got.mar == pytest.approx(0.5)


def test_undefined_rates_are_none_not_zero() -> None:
    quiet = classify([b("0000")], [b("0000")])
    assert quiet.as_json() == {
        "f1_point": None,
        "f1_event": None,
        "far": 0.0,
        "mar": None,
        "detection_rate": None,
    }
    silent = classify([b("0110")], [b("0000")])
    assert (silent.f1_point, silent.f1_event, silent.mar) == (0.0, 0.0, 1.0)
    assert silent.detection_rate == 0.0


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="labels for"):
        count(b("01"), b("011"))
