"""Seed 000's StandardScaler + IsolationForest as dense arrays, scored by one numba kernel.

scikit-learn pays a fixed cost per call (validation, joblib, one `apply` per tree: 15-60 ms for
1000 trees) that dominates the engine's small micro-batches, and walks each tree with a branch
per level. Here every tree is laid out as a perfect binary tree of its maximum depth (node k's
children are 2k+1 and 2k+2; a leaf above the bottom is padded with always-left nodes down to
copies of its value), so a walk is `depth` branch-free steps over a batch of rows, with no child
pointers to load. The arithmetic is scikit-learn's, step for step, so scores are bit-identical:
the scaler in float64, the features cast to float32 as the trees saw them in training, each
leaf's value (`depth + average path length - 1`) added in tree order, and `2 ** -(depths / d)`.

The form is saved as a plain `.npz` of numeric arrays, loaded with `allow_pickle=False`:
nothing in it can run code (docs/decisions/0014).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

FORMAT_VERSION = 1
# 2**depth leaves per tree: an IsolationForest's depth is log2 of its subsample (8 for seed
# 000's 256 rows); beyond this the dense layout would cost more memory than it saves time.
MAX_DEPTH = 16
_TREE_LEAF = -1  # scikit-learn's marker for "no child"


class NotCompilable(ValueError):
    """The pipeline is not one this module can flatten (other steps, or trees too deep)."""


@dataclass(frozen=True, slots=True)
class CompiledForest:
    """A fitted pipeline's numbers; `anomaly_score(x)` equals `-pipeline.score_samples(x)`."""

    mean: np.ndarray  # float64 per feature (zeros when the scaler does not centre)
    scale: np.ndarray  # float64 per feature (ones when it does not scale)
    feature: np.ndarray  # int32 (trees, 2**depth - 1): the column compared at each node
    threshold: np.ndarray  # float32 (trees, 2**depth - 1): go right when x > threshold
    value: np.ndarray  # float64 (trees, 2**depth): what each bottom leaf adds to the path length
    denominator: float  # trees x average path length of the forest's subsample

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def depth(self) -> int:
        return int(self.value.shape[1]).bit_length() - 1

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        """Rows of raw sensor values → scikit-learn's `-score_samples`, bit for bit."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} values, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite numbers")
        if self.denominator == 0:  # a forest fitted on one sample: scikit-learn takes 1 / 1
            return np.full(len(x), 0.5)
        # Feature-major, so a level's step over the rows reads each column contiguously.
        scaled = np.ascontiguousarray(((x - self.mean) / self.scale).astype(np.float32).T)
        depths = np.zeros(len(x))
        _path_lengths(scaled, self.feature, self.threshold, self.value, self.depth, depths)
        return np.asarray(2 ** (-np.divide(depths, self.denominator)), np.float64)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            format_version=np.int64(FORMAT_VERSION),
            mean=self.mean,
            scale=self.scale,
            feature=self.feature,
            threshold=self.threshold,
            value=self.value,
            denominator=np.float64(self.denominator),
        )

    @classmethod
    def load(cls, path: Path) -> CompiledForest:
        """Read what `save` wrote; refuses pickled objects and inconsistent arrays."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"compiled forest format {version}, expected {FORMAT_VERSION}")
            forest = cls(
                mean=data["mean"].astype(np.float64),
                scale=data["scale"].astype(np.float64),
                feature=data["feature"].astype(np.int32),
                threshold=data["threshold"].astype(np.float32),
                value=data["value"].astype(np.float64),
                denominator=float(data["denominator"]),
            )
        forest.validate()
        return forest

    def validate(self) -> None:
        """Shapes and feature indices consistent, so the kernel (which does not bounds-check)
        cannot read astray: with 2**depth - 1 inner nodes, `depth` steps end on a leaf."""
        trees, inner = self.feature.shape if self.feature.ndim == 2 else (0, 0)
        if trees == 0 or self.threshold.shape != (trees, inner):
            raise ValueError("compiled forest has no trees or mismatched node arrays")
        if self.value.shape != (trees, inner + 1) or (inner + 1) & inner:
            raise ValueError("compiled forest is not a set of perfect binary trees")
        if self.scale.shape != self.mean.shape or self.mean.ndim != 1:
            raise ValueError("compiled forest has mismatched scaler arrays")
        if np.any((self.feature < 0) | (self.feature >= self.n_features)):
            raise ValueError("compiled forest compares a feature it does not have")


def _floor32(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64: for any float32 x, x <= t ⟺ x <= floor32(t),
    so comparing in float32 decides exactly as scikit-learn's float32-against-float64 does."""
    rounded = threshold.astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    return np.where(above, np.nextafter(rounded, np.float32(-np.inf)), rounded)


def compile_forest(pipeline: Pipeline) -> CompiledForest:
    """Lay out a fitted StandardScaler + IsolationForest pipeline (seed 000's model)."""
    from sklearn.ensemble import IsolationForest
    from sklearn.ensemble._iforest import _average_path_length
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in pipeline.steps]
    if (
        len(steps) != 2
        or not isinstance(steps[0], StandardScaler)
        or not isinstance(steps[1], IsolationForest)
    ):
        raise NotCompilable(
            "only a StandardScaler + IsolationForest pipeline can be compiled, got "
            + " + ".join(type(s).__name__ for s in steps)
        )
    scaler, forest = steps
    n = int(forest.n_features_in_)
    depth = max(1, max(int(e.tree_.max_depth) for e in forest.estimators_))
    if depth > MAX_DEPTH:
        raise NotCompilable(f"trees {depth} deep, the dense layout stops at {MAX_DEPTH}")
    trees, inner = len(forest.estimators_), (1 << depth) - 1
    feature = np.zeros((trees, inner), np.int32)
    threshold = np.full((trees, inner), np.inf, np.float32)  # padding: x > inf never, go left
    value = np.zeros((trees, inner + 1))
    for t, (estimator, used, depths, averages) in enumerate(
        zip(
            forest.estimators_,
            forest.estimators_features_,
            forest._decision_path_lengths,
            forest._average_path_length_per_tree,
            strict=True,
        )
    ):
        tree = estimator.tree_
        cuts = _floor32(tree.threshold)
        stack = [(0, 0, 0)]  # (scikit-learn node, position in the perfect tree, level)
        while stack:
            node, position, level = stack.pop()
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            if left == _TREE_LEAF:
                # Every bottom position under this one, reached by always going left, ends here.
                first = ((position + 1) << (depth - level)) - 1 - inner
                # Parenthesised as scikit-learn evaluates it, so the sum rounds the same way.
                value[t, first : first + (1 << (depth - level))] = (
                    depths[node] + averages[node] - 1.0
                )
                continue
            # A tree fitted on a subset of the features numbers them within the subset.
            feature[t, position] = int(used[tree.feature[node]])
            threshold[t, position] = cuts[node]
            stack.append((left, 2 * position + 1, level + 1))
            stack.append((right, 2 * position + 2, level + 1))
    compiled = CompiledForest(
        mean=np.zeros(n) if scaler.mean_ is None else np.asarray(scaler.mean_, np.float64),
        scale=np.ones(n) if scaler.scale_ is None else np.asarray(scaler.scale_, np.float64),
        feature=feature,
        threshold=threshold,
        value=value,
        denominator=float(trees * _average_path_length([forest._max_samples])[0]),
    )
    compiled.validate()
    return compiled


@njit(cache=True, nogil=True)
def _path_lengths(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    value: np.ndarray,
    depth: int,
    out: np.ndarray,
) -> None:
    rows = x.shape[1]
    inner = feature.shape[1]
    nodes = np.empty(rows, np.int64)
    # Tree by tree, so one tree's nodes stay in cache while every row walks it.
    for t in range(feature.shape[0]):
        nodes[:] = 0
        for _ in range(depth):
            for i in range(rows):
                node = nodes[i]
                nodes[i] = 2 * node + 1 + (x[feature[t, node], i] > threshold[t, node])
        for i in range(rows):
            out[i] += value[t, nodes[i] - inner]


class CompiledMismatch(ValueError):
    """The compiled form scores a row differently from scikit-learn: it must not serve."""


def check_set(reference: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows to compare the two scorers on: the training reference (normal readings, decisions
    near the threshold) and as many rows spread uniformly over 6 spreads around it (anomalies,
    and the far branches of every tree)."""
    rng = np.random.default_rng(seed)
    center, spread = reference.mean(axis=0), np.maximum(reference.std(axis=0), 1e-9)
    wide = rng.uniform(center - 6 * spread, center + 6 * spread, size=reference.shape)
    return np.concatenate([reference, wide])


def verify(
    compiled: CompiledForest, sklearn_scores: np.ndarray, rows: np.ndarray, threshold: float
) -> None:
    """Raise CompiledMismatch unless the compiled scores and decisions on `rows` are
    scikit-learn's (`sklearn_scores`), exactly."""
    scores = compiled.anomaly_score(rows)
    decisions = (scores > threshold) != (sklearn_scores > threshold)
    if decisions.any():
        raise CompiledMismatch(
            f"compiled form decides {int(decisions.sum())} of {len(rows)} rows differently"
        )
    differ = scores != sklearn_scores
    if differ.any():
        worst = float(np.max(np.abs(scores - sklearn_scores)))
        raise CompiledMismatch(
            f"compiled form scores {int(differ.sum())} of {len(rows)} rows differently "
            f"(by up to {worst:.3g})"
        )
