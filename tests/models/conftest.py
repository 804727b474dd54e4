from __future__ import annotations

import numpy as np
import pandas as pd

from faultline.config import DEFAULT_SENSORS

SENSORS: tuple[str, ...] = tuple(DEFAULT_SENSORS)


def normal_readings(rows: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Independent normal values around the default sensors; `shift` adds sigmas per sensor."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    return pd.DataFrame(
        {
            name: rng.normal(spec.mean + shift.get(name, 0.0) * spec.std, spec.std, rows)
            for name, spec in DEFAULT_SENSORS.items()
        }
    )
