"""Balance of a generated set as an independent judge classifier measures it, three ways:
- hard: the fairness discrepancy of the judge's counted cells;
- soft: of its mean cell probabilities;
- corrected: of the cell distribution that, seen through the judge's confusion matrix (measured
  on real held-out images with known cells), best explains what it counted, the correction of
  CLEAM (Teo et al., NeurIPS 2023) solved as a least-squares problem on the simplex.
Every figure comes with a 95 % bootstrap interval (percentile, shifted by the bootstrap's bias);
the corrected one resamples the held-out images behind the confusion matrix as well as the
generated ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import nnls

from gammaface.metrics.validation import labels as checked_labels

SUM_WEIGHT = 1e3  # weight of the sum-to-one row in the constrained least squares


def discrepancy(dist: np.ndarray) -> np.ndarray:
    """L2 distance of distributions (last axis) to uniform."""
    d = np.asarray(dist, dtype=np.float64)
    return np.linalg.norm(d - 1.0 / d.shape[-1], axis=-1)


def confusion(true_cells: object, judged_cells: object, n_cells: int) -> np.ndarray:
    """(C, C) row-stochastic P(judge says j | true cell i); a cell with no held-out image is
    taken as judged without error (nothing says otherwise)."""
    t, j = checked_labels(true_cells, "true_cells"), checked_labels(judged_cells, "judged_cells")
    if len(t) != len(j):
        raise ValueError(f"true_cells and judged_cells differ in length ({len(t)} vs {len(j)}).")
    m = np.zeros((n_cells, n_cells))
    np.add.at(m, (t, j), 1.0)
    rows = m.sum(axis=1, keepdims=True)
    out = np.eye(n_cells)
    np.divide(m, rows, out=out, where=rows > 0)
    return out


def corrected(observed: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """The distribution p on the simplex minimising ||conf^T p - observed||."""
    q = np.asarray(observed, dtype=np.float64)
    q = q / q.sum()
    n = len(q)
    a = np.vstack([conf.T, SUM_WEIGHT * np.ones((1, n))])
    b = np.concatenate([q, [SUM_WEIGHT]])
    p, _ = nnls(a, b)
    return p / p.sum()


def _interval(point: float, values: np.ndarray) -> list[float]:
    """The 95 % percentile interval shifted by the bootstrap's own bias: a distance to uniform
    is a norm, and the resamples of a norm sit above it (a perfectly balanced set resamples to
    a positive discrepancy), so the plain percentile interval can miss the estimate itself.
    Clipped at 0; it always holds the point."""
    bias = float(np.mean(values)) - point
    lo, hi = np.percentile(values, [2.5, 97.5]) - bias
    return [float(max(lo, 0.0)), float(max(hi, 0.0))]


def judged_balance(judged_cells: object, cell_probs: np.ndarray, held_true: object,
                   held_judged: object, n_cells: int, seed: int, repeat: int = 200
                   ) -> dict[str, Any]:
    """Hard, soft and corrected discrepancy of a set the judge labelled (`judged_cells`, and
    `cell_probs` (N, C) its cell probabilities), with 95 % bootstrap intervals; `held_*` are
    the true and judged cells of real held-out images, for the confusion matrix."""
    j = checked_labels(judged_cells, "judged_cells")
    probs = np.asarray(cell_probs, dtype=np.float64)
    ht, hj = checked_labels(held_true, "held_true"), checked_labels(held_judged, "held_judged")
    if len(j) == 0:
        nan = float("nan")
        return {k: v for name in ("hard", "soft", "corrected")
                for k, v in ((name, nan), (f"{name}_ci", [nan, nan]))}
    conf = confusion(ht, hj, n_cells)
    counts = np.bincount(j, minlength=n_cells)
    point = {"hard": float(discrepancy(counts / len(j))),
             "soft": float(discrepancy(probs.mean(axis=0))),
             "corrected": float(discrepancy(corrected(counts, conf)))}
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(repeat):
        rows = rng.integers(0, len(j), len(j))
        held = rng.integers(0, len(ht), len(ht))
        c = np.bincount(j[rows], minlength=n_cells)
        boot["hard"].append(float(discrepancy(c / len(j))))
        boot["soft"].append(float(discrepancy(probs[rows].mean(axis=0))))
        boot["corrected"].append(float(discrepancy(corrected(c, confusion(ht[held], hj[held],
                                                                          n_cells)))))
    out: dict[str, float | list[float]] = dict(point)
    for k, v in boot.items():
        out[f"{k}_ci"] = _interval(point[k], np.array(v))
    return out


def cell_probabilities(per_attribute: list[np.ndarray]) -> np.ndarray:
    """(N, C) probability of each cell of an intersection from independent per-attribute
    heads, in mixed-radix order (the last attribute varies fastest)."""
    out = np.asarray(per_attribute[0], dtype=np.float64)
    for p in per_attribute[1:]:
        p = np.asarray(p, dtype=np.float64)
        out = (out[:, :, None] * p[:, None, :]).reshape(len(out), out.shape[1] * p.shape[1])
    return out


def balanced_floor(n: int, conf: np.ndarray, seed: int, repeat: int = 200) -> dict[str, float]:
    """What an exactly balanced set of `n` images scores through this judge: equal true
    counts, each image judged through `conf`; median and 97.5th percentile of the hard and
    corrected discrepancy. A set at its floor is as balanced as this judge can tell at this n."""
    c = conf.shape[0]
    truth = np.full(c, n // c) + (np.arange(c) < n % c)
    rng = np.random.default_rng(seed)
    hard, corr = [], []
    for _ in range(repeat):
        counts = np.sum([rng.multinomial(int(t), conf[i]) for i, t in enumerate(truth) if t > 0], axis=0)
        hard.append(float(discrepancy(counts / n)))
        corr.append(float(discrepancy(corrected(counts, conf))))
    return {"floor_hard": float(np.median(hard)), "floor_corrected": float(np.median(corr)),
            "floor_corrected_hi": float(np.percentile(corr, 97.5))}
