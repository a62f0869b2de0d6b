"""What each mixture component encodes: its attribute composition and the normalised mutual
information between component and attribute."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

from gammaface.data import registry


def nmi(components: np.ndarray, labels: pd.Series | np.ndarray) -> float:
    """NMI between component assignment and one attribute, over rows where it is known."""
    labels = pd.Series(labels)
    known = labels.notna().to_numpy()
    if known.sum() < 2:
        return float("nan")
    return float(normalized_mutual_info_score(labels[known].astype(str), components[known]))


def composition(components: np.ndarray, labels: pd.DataFrame, weights: np.ndarray
                ) -> pd.DataFrame:
    """One row per component: weight, count, and the share of every class of every attribute
    (columns `<attr>=<class>`, over the component's rows where the attribute is known)."""
    rows = []
    for k, w in enumerate(weights):
        mine = labels[components == k]
        row: dict[str, float] = {"component": k, "weight": float(w), "count": int(len(mine))}
        for name in registry.ATTRIBUTE_NAMES:
            if name not in labels:
                continue
            known = mine[name].dropna()
            for cls in registry.get(name).classes:
                row[f"{name}={cls}"] = float((known == cls).mean()) if len(known) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def nmi_table(components: np.ndarray, labels: pd.DataFrame) -> Mapping[str, float]:
    return {name: nmi(components, labels[name]) for name in registry.ATTRIBUTE_NAMES
            if name in labels}
