"""Cells of a protected intersection (every combination of the protected attributes' classes)
and each row's cell: what balance is measured over and what a fair dataset fills."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from gammaface.data import registry


def cells(protected: list[str]) -> list[tuple[str, ...]]:
    """Every cell of the protected intersection, in mixed-radix order (the last varies fastest)."""
    return list(itertools.product(*(registry.get(a).classes for a in protected)))


def cell_codes(df: pd.DataFrame, protected: list[str]) -> np.ndarray:
    """Cell index per row, -1 where any protected attribute is unknown."""
    codes = np.zeros(len(df), dtype=np.int64)
    known = np.ones(len(df), dtype=bool)
    for name in protected:
        classes = registry.get(name).classes
        c = pd.Categorical(df[name], categories=classes).codes.astype(np.int64)
        known &= c >= 0
        codes = codes * len(classes) + np.clip(c, 0, None)
    return np.where(known, codes, -1)


def cell_members(df: pd.DataFrame, protected: list[str]) -> dict[str, list[str]]:
    """Cell index -> the paths of that protected cell's rows (cells without rows left out)."""
    codes = cell_codes(df, protected)
    paths = df["path"].to_numpy()
    return {str(c): list(paths[codes == c]) for c in np.unique(codes[codes >= 0])}
