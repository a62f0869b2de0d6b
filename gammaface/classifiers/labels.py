"""Attribute labels as integer codes: -1 where a row has no label (the loss masks it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gammaface.data import registry

MISSING = -1


def encode(df: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """(N, len(attributes)) int64 class indices in registry order, MISSING for null."""
    out = np.full((len(df), len(attributes)), MISSING, dtype=np.int64)
    for j, name in enumerate(attributes):
        classes = registry.get(name).classes
        col = df[name] if name in df else pd.Series([None] * len(df))
        codes = pd.Categorical(col, categories=classes).codes
        out[:, j] = np.where(codes >= 0, codes, MISSING)
    return out


def conf_column(attribute: str) -> str:
    """The column holding the labeller's confidence in `attribute`."""
    return f"{attribute}_conf"


def decode(codes: np.ndarray, name: str) -> np.ndarray:
    classes = np.asarray(registry.get(name).classes, dtype=object)
    return np.asarray(np.where(codes >= 0, classes[np.clip(codes, 0, None)], None))
