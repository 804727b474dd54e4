"""Has the data moved away from what the model was trained on?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from faultline.models.base import DriftReport, SensorDrift

# Empty bins would make PSI infinite; this floor is the customary one and caps a bin's term.
_PSI_MIN_SHARE = 1e-4
_DECILES = np.linspace(0.1, 0.9, 9)


def population_stability_index(reference: np.ndarray, recent: np.ndarray) -> float:
    """PSI of `recent` against `reference`, over the reference's deciles."""
    edges = np.unique(np.quantile(reference, _DECILES))
    bins = len(edges) + 1
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins)
    actual = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=bins)
    p = np.maximum(expected / len(reference), _PSI_MIN_SHARE)
    q = np.maximum(actual / len(recent), _PSI_MIN_SHARE)
    return float(np.sum((q - p) * np.log(q / p)))


def _finite(frame: pd.DataFrame, sensor: str) -> np.ndarray:
    if sensor not in frame.columns:
        return np.empty(0)
    values = frame[sensor].to_numpy(np.float64, na_value=np.nan)
    return values[np.isfinite(values)]


def check_drift(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    sensors: Sequence[str],
    *,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
    min_recent: int = 200,
) -> DriftReport:
    """Compare each sensor's recent values with the training reference.

    A sensor drifts only when the KS test rejects "same distribution" (p < p_threshold) AND the
    PSI exceeds psi_threshold. With thousands of readings KS alone flags shifts far too small to
    matter, and PSI alone is noisy on small samples; requiring both reports shifts that are
    statistically real and large enough to hurt the model.
    """
    missing = [s for s in sensors if s not in reference.columns]
    if missing:
        raise ValueError(f"reference sample lacks sensors {missing}")
    sizes = {"reference_size": len(reference), "recent_size": len(recent)}
    if len(recent) < min_recent:
        return DriftReport(
            drift_detected=False,
            sensors={},
            message=(
                f"not enough data: {len(recent)} recent readings, "
                f"at least {min_recent} are needed to check drift"
            ),
            **sizes,
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
        p_value = float(test.pvalue)
        psi = population_stability_index(ref, new)
        results[sensor] = SensorDrift(
            ks_statistic=float(test.statistic),
            p_value=p_value,
            psi=psi,
            drifted=p_value < p_threshold and psi > psi_threshold,
        )
    drifted = [s for s, r in results.items() if r.drifted]
    parts = []
    if drifted:
        detail = ", ".join(
            f"{s} (KS p={results[s].p_value:.2g}, PSI={results[s].psi:.2f})" for s in drifted
        )
        parts.append(f"drift detected in {detail}")
    stable = [s for s in results if s not in drifted]
    if stable:
        parts.append(f"no drift in {', '.join(stable)}")
    if unjudged:
        parts.append(f"not enough data for {', '.join(unjudged)}")
    return DriftReport(
        drift_detected=bool(drifted),
        sensors=results,
        message="; ".join(parts),
        **sizes,
    )
