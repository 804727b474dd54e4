"""Labelled CSV files as replayable series: one station per file, one sensor per numeric column.

The time column may hold ISO 8601 strings (a value without a zone is read as UTC) or epoch
milliseconds. The label column holds 0/1 or true/false. Every other numeric column is a feature,
unless the caller names the features or the columns to ignore (neither features nor the label);
other columns are ignored. Rows must already be in time order: reordering them silently would
change what "the past" of each reading is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faultline.evaluate.replay import Series

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


@dataclass(frozen=True)
class LabelledSeries:
    series: Series
    labels: np.ndarray  # bool per row
    timestamps: pd.Series  # the time column as written


def read_labelled_csv(
    path: Path,
    time_column: str,
    label_column: str,
    sep: str = ",",
    features: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> LabelledSeries:
    """One file; `features` (when given) are its only feature columns, `ignore` are dropped."""
    frame = pd.read_csv(path, sep=sep)
    named = [*(features or ()), *ignore]
    for column in (time_column, label_column, *named):
        if column not in frame.columns:
            raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(frame.columns)})")
    if len(frame) == 0:
        raise ValueError(f"{path}: no rows")
    ts = _epoch_ms(frame[time_column], path)
    backwards = np.flatnonzero(np.diff(ts) < 0)
    if len(backwards):
        row = int(backwards[0]) + 1
        raise ValueError(
            f"{path}: rows are not in time order (row {row} is earlier than row {row - 1})"
        )
    if features is not None:
        chosen = frame[list(features)]
        text = [c for c in chosen.columns if not pd.api.types.is_numeric_dtype(chosen[c])]
        if text:
            raise ValueError(f"{path}: feature column {text[0]!r} is not numeric")
    else:
        rest = frame.drop(columns=[time_column, label_column, *ignore])
        chosen = rest.select_dtypes("number")
    if chosen.shape[1] == 0:
        raise ValueError(
            f"{path}: no numeric feature columns besides {time_column}, {label_column}"
        )
    return LabelledSeries(
        series=Series(path.stem, ts, chosen.astype(np.float64).reset_index(drop=True)),
        labels=_labels(frame[label_column], path),
        timestamps=frame[time_column],
    )


def read_labelled_csvs(
    paths: Sequence[Path],
    time_column: str,
    label_column: str,
    sep: str = ",",
    features: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> list[LabelledSeries]:
    """Every file, each named by its stem (made unique with its position when stems repeat)."""
    loaded = [read_labelled_csv(p, time_column, label_column, sep, features, ignore) for p in paths]
    stems = [item.series.name for item in loaded]
    if len(set(stems)) == len(stems):
        return loaded
    return [
        LabelledSeries(
            Series(f"{i}:{item.series.name}", item.series.ts_ms, item.series.values),
            item.labels,
            item.timestamps,
        )
        for i, item in enumerate(loaded)
    ]


def _epoch_ms(column: pd.Series, path: Path) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):
        if column.isna().any():
            raise ValueError(f"{path}: the time column has empty values")
        return column.to_numpy(np.float64).round().astype(np.int64)
    try:
        stamps = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable time value ({exc})") from None
    if stamps.isna().any():
        raise ValueError(f"{path}: the time column has empty values")
    return stamps.astype("datetime64[ms, UTC]").astype(np.int64).to_numpy()


def _labels(column: pd.Series, path: Path) -> np.ndarray:
    if column.isna().any():
        raise ValueError(f"{path}: the label column has empty values")
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(bool)
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(np.float64)
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"{path}: labels must be 0 or 1")
        return values == 1.0
    text = column.astype(str).str.strip().str.lower()
    unknown = sorted(set(text) - _TRUE - _FALSE)
    if unknown:
        raise ValueError(f"{path}: labels must be 0/1 or true/false, got {unknown[0]!r}")
    return text.isin(_TRUE).to_numpy()
