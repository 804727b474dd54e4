"""The NAB scorer against cases computed by hand from SCORING.md, and on the real corpus.

The hand cases use one file of 20 rows with one window on rows 10..14 (W = 5). Probation is
min(floor(0.15 * 20), 750) = 3 rows, so rows 0..2 are never scored. S(x) = 2/(1 + e^(5x)) - 1,
which is -tanh(5x/2); maxTP = S(-1) = tanh(2.5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from faultline.evaluate.nab import (
    MAX_TP,
    PROFILES,
    NabCorpus,
    NabError,
    NabFile,
    Profile,
    optimise,
    per_file_bound,
    probation_length,
    read_file,
    scaled_sigmoid,
    score_corpus,
    score_file,
    sweep,
    sweep_scores,
)

STANDARD = Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
LOW_FP = Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0)
LOW_FN = Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
MAX_TP_BY_HAND = math.tanh(2.5)  # 0.9866142981514305


def tiny(windows: tuple[tuple[int, int], ...] = ((10, 14),), rows: int = 20) -> NabFile:
    stamps = tuple(f"2020-01-01 00:{m:02d}:00" for m in range(rows))
    return NabFile("tiny.csv", stamps, np.zeros(rows), windows)


def detect(*rows: int, n: int = 20) -> np.ndarray:
    scores = np.zeros(n)
    scores[list(rows)] = 1.0
    return scores


def raw(*rows: int, profile: Profile = STANDARD) -> float:
    return score_file(tiny(), detect(*rows), profile, threshold=1.0).raw


def test_scaled_sigmoid_matches_the_spec_table() -> None:
    assert abs(MAX_TP - 0.9866142981514305) < 1e-15
    assert float(scaled_sigmoid(-0.5)) == pytest.approx(math.tanh(1.25))  # 0.84828
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(3.0)) == pytest.approx(-math.tanh(7.5))  # -0.9999994
    assert float(scaled_sigmoid(3.0001)) == -1.0


def test_probation_is_fifteen_percent_capped_at_750_rows() -> None:
    assert probation_length(20) == 3
    assert probation_length(4032) == 604  # floor(604.8)
    assert probation_length(22695) == 750


def test_detection_on_the_first_row_of_a_window_earns_the_full_tp_weight() -> None:
    # Row 10: pos = -(14 - 10 + 1)/5 = -1, S(-1)/maxTP = 1.
    assert raw(10) == pytest.approx(1.0)


def test_detection_on_the_last_row_earns_little() -> None:
    # Row 14: pos = -1/5, S(-0.2) = tanh(0.5) = 0.46212, / maxTP = 0.46839.
    assert raw(14) == pytest.approx(math.tanh(0.5) / MAX_TP_BY_HAND)
    assert raw(14) == pytest.approx(0.468387, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # Rows 11, 12, 13: row 11 has pos = -4/5, S(-0.8) = tanh(2) = 0.96403, / maxTP = 0.97710.
    assert raw(11, 12, 13) == pytest.approx(math.tanh(2.0) / MAX_TP_BY_HAND)
    assert raw(11, 12, 13) == raw(11)


def test_false_positive_before_the_first_window_costs_the_full_fp_weight() -> None:
    # Row 5 lies before any window: -0.11; the window is missed: -1.
    assert raw(5) == pytest.approx(-0.11 - 1.0)
    assert raw(5, profile=LOW_FP) == pytest.approx(-0.22 - 1.0)


def test_false_positive_after_a_window_decays_with_distance() -> None:
    # Row 16: pos = (16 - 14)/(5 - 1) = 0.5, S(0.5) = -tanh(1.25) = -0.84828, * 0.11 = -0.09331.
    assert raw(10, 16) == pytest.approx(1.0 - 0.11 * math.tanh(1.25))
    # Row 15, right after: pos = 1/4, S(0.25) = -tanh(0.625) = -0.55459, * 0.11.
    assert raw(10, 15) == pytest.approx(1.0 - 0.11 * math.tanh(0.625))


def test_false_positives_each_cost_and_add_up() -> None:
    # Rows 4 and 5 before the window: 2 * -0.11, plus the missed window.
    assert raw(4, 5) == pytest.approx(-0.22 - 1.0)


def test_a_missed_window_costs_the_fn_weight_of_the_profile() -> None:
    assert raw() == -1.0
    assert raw(profile=LOW_FN) == -2.0


def test_probationary_rows_are_never_detections() -> None:
    # Rows 0..2 are in probation: a detection there changes nothing. Row 3 is scored: -0.11.
    assert raw(0, 1, 2) == raw() == -1.0
    assert raw(3) == pytest.approx(-1.11)


def test_rows_between_windows_are_judged_against_the_previous_window() -> None:
    # Windows 4..6 (W = 3) and 15..17; row 12 is 6 rows after the first window's end:
    # pos = 6/(3 - 1) = 3, S(3) = -tanh(7.5); it is judged by the first window, not the nearer one.
    s = sweep_scores(20, [(4, 6), (15, 17)], STANDARD)
    assert s[12] == pytest.approx(-0.11 * math.tanh(7.5))
    assert s[13] == pytest.approx(-0.11)  # pos = 3.5 > 3: S = -1 exactly
    assert s[15] == pytest.approx(1.0)


def test_sweep_picks_the_best_threshold() -> None:
    # Row 5 scores 0.9 (a false positive), row 12 scores 0.8 (in the window), the rest 0.
    # Candidates: 1.1 → -1 (nothing); 0.9 → -1.11; 0.8 → -0.11 + S(-0.6)/maxTP
    # = -0.11 + tanh(1.5)/tanh(2.5) = 0.807429; 0.0 → every scored row detected.
    scores = np.zeros(20)
    scores[5], scores[12] = 0.9, 0.8
    thresholds, totals = sweep([tiny()], {"tiny.csv": scores}, STANDARD)
    assert list(thresholds) == [1.1, 0.9, 0.8, 0.0]
    assert totals[:3] == pytest.approx([-1.0, -1.11, -0.11 + math.tanh(1.5) / MAX_TP_BY_HAND])
    result = optimise([tiny()], {"tiny.csv": scores}, STANDARD)
    assert result.threshold == 0.8
    assert result.raw == pytest.approx(0.807429, abs=1e-6)


def test_ties_go_to_the_highest_threshold() -> None:
    # 0.9 on row 10 earns 1.0; lowering to 0.5 adds row 12 in the same window: still 1.0.
    scores = np.zeros(20)
    scores[10], scores[12] = 0.9, 0.5
    assert optimise([tiny()], {"tiny.csv": scores}, STANDARD).threshold == 0.9


def long_tiny() -> NabFile:
    # 40 rows, probation 6, window 30..34: 24 scorable rows before it make detecting
    # everything (24 * -0.11 + 1 + 5 decaying charges) worse than detecting nothing.
    return NabFile("tiny.csv", tuple(str(t) for t in range(40)), np.zeros(40), ((30, 34),))


def test_the_per_file_bound_gives_each_file_its_own_best_threshold() -> None:
    # Two files shaped like long_tiny (window 30..34; the null detector misses it: -1 each).
    # a: a false positive at 0.6 (row 10), the window's row 32 at 0.8. b: five false positives
    # at 0.7 (rows 10..14), the window's first row at 0.5. Best per file: a at 0.8 earns
    # tanh(1.5)/maxTP; b at 0.5 earns 1 - 5 * 0.11 = 0.45. One threshold for both must go down
    # to 0.5 to find b's window, so a pays its false positive too. Null = -2, perfect = 2.
    files = [NabFile(name, long_tiny().timestamps, np.zeros(40), ((30, 34),)) for name in "ab"]
    a, b = np.zeros(40), np.zeros(40)
    a[10], a[32] = 0.6, 0.8
    b[10:15], b[30] = 0.7, 0.5
    scores = {"a": a, "b": b}
    tp = math.tanh(1.5) / MAX_TP_BY_HAND
    assert per_file_bound(files, scores, STANDARD) == pytest.approx(100 * (tp + 0.45 + 2) / 4)
    corpus = optimise(files, scores, STANDARD)
    assert corpus.score == pytest.approx(100 * (tp - 0.11 + 0.45 + 2) / 4)


def test_null_and_perfect_detectors_normalise_to_0_and_100() -> None:
    null = optimise([long_tiny()], {"tiny.csv": np.full(40, 0.5)}, STANDARD)
    perfect = optimise([long_tiny()], {"tiny.csv": detect(30, n=40)}, STANDARD)
    assert (null.null_raw, null.perfect_raw) == (-1.0, 1.0)
    assert null.threshold == 1.1
    assert null.score == 0.0
    assert perfect.score == 100.0
    # A last-row detection earns tanh(0.5)/maxTP: 100 * (0.468387 + 1)/2 = 73.42.
    late = optimise([long_tiny()], {"tiny.csv": detect(34, n=40)}, STANDARD)
    assert late.score == pytest.approx(100 * (math.tanh(0.5) / MAX_TP_BY_HAND + 1) / 2)


def test_null_is_the_null_detector_at_its_own_best_threshold() -> None:
    # As NAB's runner does it: on the 20-row file, the constant 0.5 detected everywhere beats
    # detecting nothing. Rows 3..9: 7 * -0.11 = -0.77; row 10: +1; rows 15..19 at pos = k/4:
    # -0.11 * (tanh(0.625) + tanh(1.25) + tanh(1.875) + tanh(2.5) + tanh(3.125)) = -0.477361.
    after = sum(math.tanh(5 * k / 8) for k in range(1, 6))
    result = optimise([tiny()], {"tiny.csv": np.full(20, 0.5)}, STANDARD)
    assert result.threshold == 0.5
    assert result.null_raw == pytest.approx(-0.77 + 1.0 - 0.11 * after)
    assert result.null_raw == pytest.approx(-0.247366, abs=1e-6)
    assert result.score == pytest.approx(0.0)


def test_the_sweep_agrees_with_rescoring_every_file_at_each_threshold() -> None:
    rng = np.random.default_rng(0)
    files = [
        NabFile(f"f{i}.csv", tuple(str(t) for t in range(300)), np.zeros(300), windows)
        for i, windows in enumerate([((60, 90), (150, 170)), ((100, 140),), ()])
    ]
    scores = {f.name: rng.random(300).round(2) for f in files}  # rounding makes ties
    for profile in (STANDARD, LOW_FP, LOW_FN):
        thresholds, totals = sweep(files, scores, profile)
        for t, total in zip(thresholds, totals, strict=True):
            by_file = sum(score_file(f, scores[f.name], profile, t).raw for f in files)
            assert total == pytest.approx(by_file, abs=1e-9)


def test_scores_outside_the_unit_interval_are_refused() -> None:
    for bad in (np.full(20, 1.5), np.full(20, np.nan), np.zeros(19)):
        with pytest.raises(NabError):
            optimise([tiny()], {"tiny.csv": bad}, STANDARD)


def test_a_window_end_that_is_not_a_row_is_refused(tmp_path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n")
    with pytest.raises(NabError, match="not a row's timestamp"):
        read_file("f.csv", path, [["2020-01-01 00:00:00.000000", "2020-01-01 00:03:00.000000"]])
    ok = read_file("f.csv", path, [["2020-01-01 00:00:00.000000", "2020-01-01 00:05:00.000000"]])
    assert ok.windows == ((0, 1),)


def test_overlapping_windows_are_refused() -> None:
    with pytest.raises(NabError, match="disjoint"):
        tiny(((4, 8), (8, 10)))


def test_on_the_corpus_null_scores_0_and_perfect_100_for_every_profile(
    nab_corpus: NabCorpus,
) -> None:
    assert len(nab_corpus.files) == 58
    assert nab_corpus.windows == 116
    null = {f.name: np.full(f.rows, 0.5) for f in nab_corpus.files}
    perfect = {f.name: np.zeros(f.rows) for f in nab_corpus.files}
    for f in nab_corpus.files:
        perfect[f.name][[a for a, _ in f.windows]] = 1.0
    null_results = score_corpus(nab_corpus, null)
    perfect_results = score_corpus(nab_corpus, perfect)
    for name in PROFILES:
        assert null_results[name].score == 0.0
        assert null_results[name].threshold == 1.1
        assert perfect_results[name].score == pytest.approx(100.0)
        assert perfect_results[name].perfect_raw == 116.0
    assert null_results["reward_low_FN_rate"].null_raw == -232.0


def test_on_the_corpus_detecting_everything_is_worse_than_null(nab_corpus: NabCorpus) -> None:
    everything = {f.name: np.ones(f.rows) for f in nab_corpus.files}
    at_one = sum(score_file(f, everything[f.name], STANDARD, 1.0).raw for f in nab_corpus.files)
    assert at_one < -116.0
    # So the optimiser keeps NAB's first candidate, 1.1: nothing detected, the null score.
    for result in score_corpus(nab_corpus, everything).values():
        assert result.threshold == 1.1
        assert result.score == 0.0
