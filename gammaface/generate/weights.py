"""Component weights that balance the protected attributes, and what a choice of weights is
predicted to do to them.

A component's composition is the distribution of the protected intersection cells among its
images. Mixing components with weights w gives the cell distribution C^T w, and the fairness
discrepancy of that distribution is its L2 distance to uniform, so the most balanced mix the
components allow is a least-squares problem over the simplex, solved here with scipy's NNLS
and the sum-to-one constraint as a heavily weighted extra row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from gammaface.data import registry
from gammaface.data.cells import cell_codes, cells
from gammaface.metrics.generation import fairness_discrepancy, fairness_discrepancy_bootstrap

SIMPLEX_PENALTY = 1e3


def compositions(resp: np.ndarray, codes: np.ndarray, n_cells: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(K, n_cells) cell distribution of each component, each row weighted by its posterior
    responsibility, and (K,) the labelled mass behind each. Rows with an unknown cell are left
    out; a component with no labelled mass has an unknown composition, written as uniform but
    marked by its zero mass so that no caller takes it for evidence."""
    known = codes >= 0
    onehot = np.zeros((int(known.sum()), n_cells))
    onehot[np.arange(onehot.shape[0]), codes[known]] = 1.0
    mass = resp[known].T @ onehot  # (K, cells)
    totals = mass.sum(axis=1, keepdims=True)
    out = np.full_like(mass, 1.0 / n_cells)
    np.divide(mass, totals, out=out, where=totals > 0)
    return out, totals[:, 0]


# A small pull towards equal weights, relative to how far the compositions spread: where several
# mixes are equally balanced (more components than cells, or components alike) it picks the one
# spread over components, and it moves the optimum's discrepancy by under 1e-3
# (tests/generate/test_weights.py).
RIDGE = 1e-4
# Compositions closer than this (max absolute difference) carry no information to weight by.
IDENTICAL = 1e-6
# A solution that puts this much weight on one component draws the whole set from it.
ONE_COMPONENT = 0.999


@dataclass(frozen=True)
class Balancing:
    weights: np.ndarray
    fallback: str | None = None  # why equal weights were used instead, when they were

    @property
    def solved(self) -> bool:
        return self.fallback is None


def balancing_weights(comp: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Non-negative weights summing to 1 that bring comp^T w closest to uniform, with a small
    ridge towards equal weights (NNLS on the stacked least-squares problem)."""
    k, n_cells = comp.shape
    spread = float(((comp - comp.mean(axis=0)) ** 2).sum()) / k  # the scale w acts on
    ridge = ridge * spread
    rows = [comp.T, np.sqrt(ridge) * np.eye(k), SIMPLEX_PENALTY * np.ones((1, k))]
    targets = [np.full(n_cells, 1.0 / n_cells), np.full(k, np.sqrt(ridge) / k), np.array([SIMPLEX_PENALTY])]
    w, _ = nnls(np.vstack(rows), np.concatenate(targets))
    if w.sum() <= 0:
        return np.full(k, 1.0 / k)
    return w / w.sum()


def balance_components(comp: np.ndarray, mass: np.ndarray | None = None) -> Balancing:
    """`balancing_weights`, or equal weights with the reason when the problem is degenerate:
    no component's composition is known, all compositions are the same, or the solution
    draws everything from one component."""
    k = comp.shape[0]
    equal = np.full(k, 1.0 / k)
    if k == 1:
        return Balancing(equal, "the mixture has one component, so there is nothing to weight")
    if mass is not None and not (np.asarray(mass) > 0).any():
        return Balancing(equal, "no component has an image with every protected attribute "
                                "labelled, so no composition is known")
    if np.abs(comp - comp[0]).max() < IDENTICAL:
        return Balancing(equal, "every component has the same composition, so no weighting "
                                "changes the balance")
    w = balancing_weights(comp)
    if w.max() >= ONE_COMPONENT:
        return Balancing(equal, f"the most balanced mix draws every image from component "
                                f"{int(w.argmax())}, which would make a set of one component")
    return Balancing(w)


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


def set_balance(name: str, labels: pd.DataFrame, protected: list[str], seed: int, repeat: int
                 ) -> dict[str, Any]:
    """Discrepancy (point, bootstrap median and std) per protected attribute and intersection,
    and the class shares, over the rows where every protected attribute is known."""
    codes = cell_codes(labels, protected)
    known = labels[codes >= 0]
    row: dict[str, Any] = {"set": name, "n": int(len(known))}
    keys = [(a, [a]) for a in protected] + [(":".join(protected), protected)]
    for key, attrs in keys:
        c = cell_codes(known, attrs)
        n_cells = len(cells(attrs))
        row[f"discrepancy/{key}"] = fairness_discrepancy(c, n_cells)
        median, std = fairness_discrepancy_bootstrap(c, n_cells, seed=seed, repeat=repeat)
        row[f"discrepancy_median/{key}"] = median
        row[f"discrepancy_std/{key}"] = std
    for a in protected:
        shares = known[a].value_counts(normalize=True)
        for cls in registry.get(a).classes:
            row[f"share/{a}/{cls}"] = float(shares.get(cls, 0.0))
    return row
