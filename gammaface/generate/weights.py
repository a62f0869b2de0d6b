"""Component weights that balance the protected attributes, and what a choice of weights is
predicted to do to them.

A component's composition is the distribution of the protected intersection cells among its
images. Mixing components with weights w gives the cell distribution C^T w, and the fairness
discrepancy of that distribution is its L2 distance to uniform, so the most balanced mix the
components allow is a least-squares problem over the simplex, solved here with scipy's NNLS
and the sum-to-one constraint as a heavily weighted extra row.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from gammaface.data import registry

SIMPLEX_PENALTY = 1e3


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


def compositions(resp: np.ndarray, codes: np.ndarray, n_cells: int) -> np.ndarray:
    """(K, n_cells) cell distribution of each component, each row weighted by its posterior
    responsibility; rows with an unknown cell are left out. A component with no labelled mass
    gets the uniform distribution (it carries no evidence either way)."""
    known = codes >= 0
    onehot = np.zeros((int(known.sum()), n_cells))
    onehot[np.arange(onehot.shape[0]), codes[known]] = 1.0
    mass = resp[known].T @ onehot  # (K, cells)
    totals = mass.sum(axis=1, keepdims=True)
    out = np.full_like(mass, 1.0 / n_cells)
    np.divide(mass, totals, out=out, where=totals > 0)
    return out


def balancing_weights(comp: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that bring comp^T w closest to uniform."""
    k, n_cells = comp.shape
    A = np.vstack([comp.T, SIMPLEX_PENALTY * np.ones((1, k))])
    b = np.concatenate([np.full(n_cells, 1.0 / n_cells), [SIMPLEX_PENALTY]])
    w, _ = nnls(A, b)
    if w.sum() <= 0:
        return np.full(k, 1.0 / k)
    return w / w.sum()


def marginal(cell_dist: np.ndarray, protected: list[str], attribute: str) -> np.ndarray:
    shape = tuple(registry.get(a).n_classes for a in protected)
    axis = tuple(i for i, a in enumerate(protected) if a != attribute)
    return cell_dist.reshape(shape).sum(axis=axis)


def discrepancy(dist: np.ndarray) -> float:
    """L2 distance of a class distribution to uniform (the fairness discrepancy)."""
    dist = np.asarray(dist, dtype=np.float64)
    return float(np.linalg.norm(dist / dist.sum() - 1.0 / len(dist)))


def predicted_balance(weights: dict[str, np.ndarray], comp: np.ndarray, protected: list[str]
                      ) -> pd.DataFrame:
    """One row per method: the predicted discrepancy of every protected attribute and of their
    intersection, and the predicted share of every class."""
    rows = []
    for method, w in weights.items():
        dist = np.asarray(w) @ comp
        row: dict[str, float | str] = {"method": method}
        for name in protected:
            m = marginal(dist, protected, name)
            row[f"discrepancy/{name}"] = discrepancy(m)
            for cls, share in zip(registry.get(name).classes, m):
                row[f"share/{name}/{cls}"] = float(share)
        row["discrepancy/" + ":".join(protected)] = discrepancy(dist)
        rows.append(row)
    return pd.DataFrame(rows)


def equal_weight_warnings(table: pd.DataFrame, protected: list[str]) -> list[str]:
    """Sentences for every attribute that equal weights move further from uniform than the
    mixture's own weights."""
    by = table.set_index("method")
    if "gmm" not in by.index or "gmm_weighted" not in by.index:
        return []
    out = []
    for name in [*protected, ":".join(protected)]:
        eq, own = by.loc["gmm", f"discrepancy/{name}"], by.loc["gmm_weighted", f"discrepancy/{name}"]
        if eq > own + 1e-9:
            out.append(f"equal weights per component are predicted to move {name} further from "
                       f"uniform than the mixture's own weights (discrepancy {eq:.3f} vs {own:.3f}).")
    return out
