"""Float columns to JSON texts, built column by column rather than row by row.

Floats are written in their shortest round-trip form, so reading the JSON back gives the very
same numbers. NaN becomes null (or, for objects, can be left out); ±inf becomes ±1e999, valid
JSON that every IEEE parser (Python's json, JavaScript, SQLite) reads back as ±inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

_ENCODER = msgspec.json.Encoder()


def json_numbers(column: np.ndarray) -> np.ndarray:
    """Each float of a 1-D array as JSON text, in an object array."""
    # msgspec formats the whole column in one call (as null for NaN and ±inf).
    lines = _ENCODER.encode_lines(column.tolist()).decode().split("\n")
    texts = np.array(lines[: len(column)], dtype=object)
    texts[np.isposinf(column)] = "1e999"
    texts[np.isneginf(column)] = "-1e999"
    return texts


def json_objects(matrix: np.ndarray, names: Sequence[str], *, omit_nan: bool) -> np.ndarray:
    """Row i of `matrix` as the JSON object {names[j]: matrix[i, j]}, in an object array.

    With `omit_nan`, NaN members are left out, else written as null. Rows are grouped by which
    members they carry, so the work is per column and per group, not per row.
    """
    rows = len(matrix)
    keys = [_ENCODER.encode(name).decode() for name in names]
    texts = [json_numbers(matrix[:, j]) for j in range(len(names))]
    carried = ~np.isnan(matrix) if omit_nan else np.ones(matrix.shape, bool)
    if carried.all():  # the usual case, and sorting rows to find their patterns is not cheap
        patterns, group = carried[:1], np.zeros(rows, np.int64)
    else:
        patterns, group = np.unique(carried, axis=0, return_inverse=True)
        group = group.reshape(-1)
    out = np.empty(rows, dtype=object)
    for g, pattern in enumerate(patterns):
        members = np.flatnonzero(group == g)
        text = np.full(len(members), "{", dtype=object)
        for k, j in enumerate(np.flatnonzero(pattern)):
            text = text + f"{',' if k else ''}{keys[j]}:" + texts[j][members]
        out[members] = text + "}"
    return out


def json_list(items: Sequence[str]) -> str:
    return _ENCODER.encode(list(items)).decode()
