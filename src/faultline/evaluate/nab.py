"""The Numenta Anomaly Benchmark: corpus loading and the NAB scorer.

The scorer follows `../shared/nab/SCORING.md` (a specification of numenta/NAB at commit ea702d75)
section by section: probation (§2), the scaled sigmoid (§3), per-row sweep scores (§4), the score
of a set of detections (§5), one corpus-wide threshold found by an exhaustive sweep (§6) and
normalisation against the null detector (§7). Everything works on row indices, as NAB does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PROFILES: tuple[str, ...] = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 0.15 * 5000
NOTHING_DETECTED = 1.1  # NAB's first candidate threshold, above every score in [0, 1]
NULL_SCORE = 0.5  # NAB's null detector emits this constant


class NabError(ValueError):
    """The corpus or a detector's output does not fit what NAB scoring requires."""


@dataclass(frozen=True)
class Profile:
    """The weights of one NAB application profile (`config/profiles.json`)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True)
class NabFile:
    """One data file: its rows and its labelled windows as inclusive row-index pairs."""

    name: str  # relative path, e.g. "realKnownCause/nyc_taxi.csv"
    timestamps: tuple[str, ...]  # as written in the file; NAB's times carry no zone (read as UTC)
    values: np.ndarray
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        n = len(self.values)
        previous_end = -1
        for a, b in self.windows:
            if not previous_end < a <= b < n:
                raise NabError(f"{self.name}: windows must be sorted, disjoint and within rows")
            previous_end = b

    @property
    def rows(self) -> int:
        return len(self.values)

    def ts_ms(self) -> np.ndarray:
        """Epoch milliseconds, reading NAB's zoneless timestamps as UTC."""
        stamps = pd.to_datetime(pd.Series(self.timestamps), utc=True)
        return (stamps.astype("datetime64[ms, UTC]").astype(np.int64)).to_numpy()

    def window_mask(self) -> np.ndarray:
        """True on rows inside a labelled window (NAB's `label` column)."""
        mask = np.zeros(self.rows, bool)
        for a, b in self.windows:
            mask[a : b + 1] = True
        return mask


@dataclass(frozen=True)
class NabCorpus:
    root: Path
    files: tuple[NabFile, ...]
    profiles: Mapping[str, Profile]

    @property
    def windows(self) -> int:
        return sum(len(f.windows) for f in self.files)


def probation_length(rows: int) -> int:
    """§2: the leading rows that are never scored."""
    return int(min(math.floor(PROBATION_FRACTION * rows), PROBATION_MAX_ROWS))


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """§3: 2·sigmoid(-5x) - 1, and exactly -1 beyond x = 3."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0)


MAX_TP = float(scaled_sigmoid(-1.0))


def sweep_scores(rows: int, windows: Sequence[tuple[int, int]], profile: Profile) -> np.ndarray:
    """§4: what a detection on each row would earn (positive in windows, negative outside)."""
    out = np.full(rows, -profile.fp_weight)
    if not windows:
        return out
    starts = np.array([a for a, _ in windows])
    ends = np.array([b for _, b in windows])
    i = np.arange(rows)
    k = np.searchsorted(starts, i, side="right") - 1  # the last window starting at or before i
    seen = k >= 0
    ks = np.where(seen, k, 0)
    a, b = starts[ks], ends[ks]
    width = b - a + 1
    inside = seen & (i <= b)
    after = seen & (i > b)
    out[inside] = profile.tp_weight * scaled_sigmoid(-(b - i + 1)[inside] / width[inside]) / MAX_TP
    if after.any():
        if (width[after] < 2).any():
            raise NabError("a window one row wide has no defined false-positive decay")
        out[after] = profile.fp_weight * scaled_sigmoid((i - b)[after] / (width[after] - 1))
    return out


def window_ids(rows: int, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """The index of the window each row lies in, -1 outside every window."""
    out = np.full(rows, -1, np.int64)
    for w, (a, b) in enumerate(windows):
        out[a : b + 1] = w
    return out


@dataclass(frozen=True)
class FileScore:
    name: str
    raw: float
    detected_windows: int
    missed_windows: int
    false_positives: int  # detected scorable rows outside every window


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float  # corpus raw score at the threshold
    null_raw: float
    perfect_raw: float
    files: tuple[FileScore, ...]

    @property
    def score(self) -> float:
        """§7: 100·(raw - null)/(perfect - null); null = 0, perfect = 100."""
        return 100.0 * (self.raw - self.null_raw) / (self.perfect_raw - self.null_raw)


class _Pooled:
    """The scorable rows of every file, flattened, with their windows numbered corpus-wide."""

    def __init__(self, files: Sequence[NabFile], profile: Profile) -> None:
        parts_s, parts_w, self.keep = [], [], []
        offset = 0
        for f in files:
            p = probation_length(f.rows)
            keep = np.arange(p, f.rows)
            ids = window_ids(f.rows, f.windows)[keep]
            parts_w.append(np.where(ids >= 0, ids + offset, -1))
            parts_s.append(sweep_scores(f.rows, f.windows, profile)[keep])
            self.keep.append(keep)
            offset += len(f.windows)
        self.windows = offset
        self.sweep = np.concatenate(parts_s) if parts_s else np.empty(0)
        self.window = np.concatenate(parts_w) if parts_w else np.empty(0, np.int64)

    def scores(self, files: Sequence[NabFile], scores: Mapping[str, np.ndarray]) -> np.ndarray:
        pooled = []
        for f, keep in zip(files, self.keep, strict=True):
            s = np.asarray(scores[f.name], np.float64)
            if s.shape != (f.rows,):
                raise NabError(f"{f.name}: {s.shape[0] if s.ndim else 0} scores for {f.rows} rows")
            if not np.all((s >= 0.0) & (s <= 1.0)):
                raise NabError(f"{f.name}: anomaly scores must lie in [0, 1] (NaN is not allowed)")
            pooled.append(s[keep])
        return np.concatenate(pooled) if pooled else np.empty(0)


def sweep(
    files: Sequence[NabFile], scores: Mapping[str, np.ndarray], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """§6: every candidate threshold (1.1, then each distinct score, descending) and its raw score.

    Detections at threshold t are the rows with score >= t, so walking the pooled rows from the
    highest score down, the raw score after the last row of each distinct score is t's total.
    A window's part is the best sweep score among its detected rows (-fnWeight until one is), so
    its increments are the steps of a running maximum.
    """
    pool = _Pooled(files, profile)
    s = pool.scores(files, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, sweep_sorted, win_sorted = s[order], pool.sweep[order], pool.window[order]

    # Inside a window the sweep score falls as the row index rises, so a window's best detection
    # so far is its earliest row so far: a running minimum of pooled row positions, per window.
    gain = np.where(win_sorted < 0, sweep_sorted, 0.0)
    in_window = np.flatnonzero(win_sorted >= 0)
    if len(in_window):
        w = win_sorted[in_window]
        by_window = np.argsort(w, kind="stable")  # keeps descending-score order inside a window
        w_g = w[by_window]
        first = np.r_[True, w_g[1:] != w_g[:-1]]
        earliest = _segmented_cummin(order[in_window][by_window], first)
        best = pool.sweep[earliest]
        previous = np.where(first, -profile.fn_weight, np.r_[0.0, best[:-1]])
        step = np.empty(len(in_window))
        step[by_window] = best - previous
        gain[in_window] = step
    totals = -profile.fn_weight * pool.windows + np.cumsum(gain)

    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], len(s_sorted) > 0][: len(s_sorted)]
    thresholds = np.r_[NOTHING_DETECTED, s_sorted[last_of_value]]
    raw = np.r_[-profile.fn_weight * pool.windows, totals[last_of_value]]
    return thresholds, raw


def _segmented_cummin(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running minimum of non-negative integers that restarts where `starts` is True."""
    segment = np.cumsum(starts, dtype=np.int64) - 1
    # Sink each segment below every earlier one, so one global running minimum never crosses
    # a segment boundary; integers keep it exact.
    depth = int(values.max()) + 1
    return np.minimum.accumulate(values - segment * depth) + segment * depth


def score_file(f: NabFile, scores: np.ndarray, profile: Profile, threshold: float) -> FileScore:
    """§5 for one file: detections are the scorable rows with score >= threshold."""
    p = probation_length(f.rows)
    detected = np.asarray(scores, np.float64) >= threshold
    detected[:p] = False
    s = sweep_scores(f.rows, f.windows, profile)
    ids = window_ids(f.rows, f.windows)
    raw = 0.0
    hits = 0
    for w in range(len(f.windows)):
        rows = detected & (ids == w)
        if rows.any():
            raw += float(s[rows].max())
            hits += 1
        else:
            raw -= profile.fn_weight
    fp = detected & (ids < 0)
    raw += float(s[fp].sum())
    return FileScore(f.name, raw, hits, len(f.windows) - hits, int(fp.sum()))


def optimise(
    files: Sequence[NabFile], scores: Mapping[str, np.ndarray], profile: Profile
) -> ProfileResult:
    """§6 then §7: the best corpus-wide threshold (ties go to the highest), rescored per file."""
    thresholds, raw = sweep(files, scores, profile)
    threshold = float(thresholds[int(np.argmax(raw))])
    per_file = tuple(score_file(f, scores[f.name], profile, threshold) for f in files)
    null = {f.name: np.full(f.rows, NULL_SCORE) for f in files}
    _, null_raw = sweep(files, null, profile)
    windows = sum(len(f.windows) for f in files)
    return ProfileResult(
        profile=profile.name,
        threshold=threshold,
        raw=sum(fs.raw for fs in per_file),
        null_raw=float(null_raw.max()),
        perfect_raw=windows * profile.tp_weight,
        files=per_file,
    )


def per_file_bound(
    files: Sequence[NabFile], scores: Mapping[str, np.ndarray], profile: Profile
) -> float:
    """The normalised score if every file had its own best threshold (which needs the labels).

    Not a NAB score: a diagnostic. The gap between it and the corpus-wide result is what
    calibrating scores across files could still buy; the gap between it and 100 is what only
    a better ranking of readings inside files can.
    """
    raw = sum(float(sweep([f], {f.name: scores[f.name]}, profile)[1].max()) for f in files)
    null = {f.name: np.full(f.rows, NULL_SCORE) for f in files}
    null_raw = float(sweep(files, null, profile)[1].max())
    perfect_raw = sum(len(f.windows) for f in files) * profile.tp_weight
    return 100.0 * (raw - null_raw) / (perfect_raw - null_raw)


def score_corpus(corpus: NabCorpus, scores: Mapping[str, np.ndarray]) -> dict[str, ProfileResult]:
    """Every profile's result for one detector's scores (file name → one score per row)."""
    missing = [f.name for f in corpus.files if f.name not in scores]
    if missing:
        raise NabError(f"no scores for {len(missing)} file(s), e.g. {missing[0]}")
    return {name: optimise(corpus.files, scores, corpus.profiles[name]) for name in PROFILES}


def default_root() -> Path | None:
    """Where the corpus lives: $FAULTLINE_SHARED/nab, else ../shared/nab beside the repository."""
    env = os.environ.get("FAULTLINE_SHARED")
    candidates = [Path(env) / "nab"] if env else []
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "nab")
    candidates.append(Path.cwd().parent / "shared" / "nab")
    for path in candidates:
        if (path / "labels" / "combined_windows.json").is_file():
            return path
    return None


def load_profiles(path: Path) -> dict[str, Profile]:
    raw = json.loads(path.read_text())
    out = {}
    for name in PROFILES:
        if name not in raw:
            raise NabError(f"{path}: profile {name!r} is missing")
        costs = raw[name]["CostMatrix"]
        out[name] = Profile(name, costs["tpWeight"], costs["fpWeight"], costs["fnWeight"])
    return out


def load_corpus(root: Path) -> NabCorpus:
    """The data files, their windows (`labels/combined_windows.json`) and the profiles."""
    windows_path = root / "labels" / "combined_windows.json"
    if not windows_path.is_file():
        raise NabError(f"not a NAB corpus (no {windows_path})")
    labelled: dict[str, list[list[str]]] = json.loads(windows_path.read_text())
    files = []
    for name in sorted(labelled):
        path = root / "data" / name
        if not path.is_file():
            raise NabError(f"{path} is labelled but missing")
        files.append(read_file(name, path, labelled[name]))
    return NabCorpus(root, tuple(files), load_profiles(root / "config" / "profiles.json"))


def read_file(name: str, path: Path, windows: Sequence[Sequence[str]]) -> NabFile:
    frame = pd.read_csv(path, dtype={"timestamp": str})
    if list(frame.columns) != ["timestamp", "value"]:
        raise NabError(f"{path}: expected columns timestamp,value, got {list(frame.columns)}")
    stamps = frame["timestamp"].tolist()
    index = {ts: i for i, ts in enumerate(pd.to_datetime(frame["timestamp"]).tolist())}
    rows = []
    for start, end in windows:
        try:
            rows.append((index[pd.Timestamp(start)], index[pd.Timestamp(end)]))
        except KeyError as exc:
            raise NabError(f"{name}: window end {exc.args[0]} is not a row's timestamp") from None
    return NabFile(name, tuple(stamps), frame["value"].to_numpy(np.float64), tuple(rows))
