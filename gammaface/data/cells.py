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


def equal_cells(df: pd.DataFrame, attributes: list[str], most: int, seed: int) -> pd.DataFrame:
    """The same number of rows from every non-empty cell of `attributes`: the smallest cell's
    count, at most `most`, drawn by a seeded permutation; rows keep their order."""
    codes = cell_codes(df, attributes)
    found = np.bincount(codes[codes >= 0], minlength=len(cells(attributes)))
    present = found[found > 0]
    if not len(present):
        return df.iloc[:0]
    k = int(min(most, present.min()))
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(codes == c))[:k]
                           for c in np.flatnonzero(found)])
    return df.iloc[np.sort(keep)]
