"""Has the data moved away from what the model was trained on, by enough to matter?

Significance tests answer the wrong question here: with thousands of readings, and readings
that are autocorrelated (each station a slowly wandering process), KS rejects "same
distribution" for fresh data from the very process the model was trained on. So drift is judged
by effect size, which does not grow with the sample: per sensor, the Wasserstein distance in
units of the reference's standard deviation (how far the values moved, in normal spreads) and
the population stability index (how much mass moved between the reference's deciles); for the
model, its anomaly rate on the recent readings against its contamination. KS statistics stay in
the report for reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, ks_2samp, wasserstein_distance

from faultline.models.base import DriftReport, LoadedModel, ScoreDrift, SensorDrift

# Empty bins would make PSI infinite; this floor is the customary one and caps a bin's term.
_PSI_MIN_SHARE = 1e-4
_DECILES = np.linspace(0.1, 0.9, 9)
# A sensor whose reference does not vary: any movement at all is measured against this.
_MIN_SPREAD = 1e-9


def population_stability_index(reference: np.ndarray, recent: np.ndarray) -> float:
    """PSI of `recent` against `reference`, over the reference's deciles."""
    edges = np.unique(np.quantile(reference, _DECILES))
    bins = len(edges) + 1
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins)
    actual = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=bins)
    p = np.maximum(expected / len(reference), _PSI_MIN_SHARE)
    q = np.maximum(actual / len(recent), _PSI_MIN_SHARE)
    return float(np.sum((q - p) * np.log(q / p)))


def relative_shift(reference: np.ndarray, recent: np.ndarray) -> float:
    """Wasserstein-1 distance between the samples, in reference standard deviations."""
    spread = max(float(np.std(reference)), _MIN_SPREAD)
    return float(wasserstein_distance(reference, recent)) / spread


def _finite(frame: pd.DataFrame, sensor: str) -> np.ndarray:
    if sensor not in frame.columns:
        return np.empty(0)
    values = frame[sensor].to_numpy(np.float64, na_value=np.nan)
    return values[np.isfinite(values)]


def score_drift(
    flagged: np.ndarray,
    contamination: float,
    *,
    p_threshold: float = 0.01,
    rate_ratio: float = 3.0,
) -> ScoreDrift:
    """The model flags more than `rate_ratio` times its contamination, and more than chance
    explains (binomial test): the data it sees is no longer the data it learned."""
    rows = len(flagged)
    hits = int(np.count_nonzero(flagged))
    p_value = float(binomtest(hits, rows, contamination, alternative="greater").pvalue)
    rate = hits / rows
    return ScoreDrift(
        anomaly_rate=rate,
        expected_rate=contamination,
        p_value=p_value,
        drifted=p_value < p_threshold and rate > rate_ratio * contamination,
        rows=rows,
    )


def _model_score_drift(
    model: LoadedModel, recent: pd.DataFrame, min_recent: int, **thresholds: float
) -> ScoreDrift | str | None:
    """Score drift over recent complete readings, why not (a message), or None (no
    contamination recorded for the model)."""
    contamination = model.info.params.get("contamination")
    if contamination is None:
        return None
    columns = list(model.sensors)
    if any(c not in recent.columns for c in columns):
        return "not enough data for the anomaly rate (readings lack the model's sensors)"
    x = recent[columns].to_numpy(np.float64, na_value=np.nan)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < min_recent:
        return f"not enough data for the anomaly rate ({len(x)} complete readings)"
    return score_drift(np.asarray(model.is_anomaly(x), bool), float(contamination), **thresholds)


def check_drift(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    sensors: Sequence[str],
    *,
    shift_threshold: float = 0.5,
    psi_threshold: float = 0.25,
    min_recent: int = 200,
    model: LoadedModel | None = None,
) -> DriftReport:
    """Compare each sensor's recent values with the training reference, and (given the model)
    its anomaly rate with its contamination.

    A sensor drifts when its values moved by at least `shift_threshold` reference standard
    deviations (Wasserstein) or their deciles' shares changed by a PSI of at least
    `psi_threshold`. Fresh data from the simulator that trained the model stays below a quarter
    of either (tests/models/test_drift.py); a one-standard-deviation shift is about 1.0 and 0.9.
    """
    missing = [s for s in sensors if s not in reference.columns]
    if missing:
        raise ValueError(f"reference sample lacks sensors {missing}")
    if len(recent) < min_recent:
        return DriftReport(
            drift_detected=False,
            sensors={},
            reference_size=len(reference),
            recent_size=len(recent),
            message=(
                f"not enough data: {len(recent)} recent readings, "
                f"at least {min_recent} are needed to check drift"
            ),
        )
    results: dict[str, SensorDrift] = {}
    unjudged: list[str] = []
    for sensor in sensors:
        ref = _finite(reference, sensor)
        new = _finite(recent, sensor)
        if len(ref) == 0:
            raise ValueError(f"reference sample has no finite values for {sensor!r}")
        if len(new) < min_recent:
            unjudged.append(f"{sensor} ({len(new)} readings)")
            continue
        test = ks_2samp(ref, new)
        psi = population_stability_index(ref, new)
        shift = relative_shift(ref, new)
        results[sensor] = SensorDrift(
            ks_statistic=float(test.statistic),
            p_value=float(test.pvalue),
            psi=psi,
            drifted=shift >= shift_threshold or psi >= psi_threshold,
            shift=shift,
        )
    score = None if model is None else _model_score_drift(model, recent, min_recent)
    drifted = [s for s, r in results.items() if r.drifted]
    parts = []
    if drifted:
        detail = ", ".join(
            f"{s} (shift {results[s].shift:.2f} sd, PSI={results[s].psi:.2f}, "
            f"KS p={results[s].p_value:.2g})"
            for s in drifted
        )
        parts.append(f"drift detected in {detail}")
    stable = [s for s in results if s not in drifted]
    if stable:
        parts.append(f"no drift in {', '.join(stable)}")
    if unjudged:
        parts.append(f"not enough data for {', '.join(unjudged)}")
    if isinstance(score, str):
        parts.append(score)
    elif score is not None:
        rates = f"{score.anomaly_rate:.2%} of readings flagged, {score.expected_rate:.2%} expected"
        parts.append(("score drift: " if score.drifted else "no score drift: ") + rates)
    score_report = score if isinstance(score, ScoreDrift) else None
    return DriftReport(
        drift_detected=bool(drifted) or (score_report is not None and score_report.drifted),
        sensors=results,
        reference_size=len(reference),
        recent_size=len(recent),
        message="; ".join(parts),
        score=score_report,
    )
