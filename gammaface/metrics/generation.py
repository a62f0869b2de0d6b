"""Balance of a generated set: how far its class distribution is from uniform."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from gammaface.metrics import validation as v


def fairness_discrepancy(labels: object, n_classes: int) -> float:
    """L2 distance between the empirical class distribution (all classes, zeros included) and
    the uniform one; 0 is perfectly balanced. NaN for an empty set."""
    y = _checked(labels, n_classes)
    if len(y) == 0:
        return float("nan")
    p = np.bincount(y, minlength=n_classes) / len(y)
    return float(np.linalg.norm(p - 1.0 / n_classes))


def _checked(labels: object, n_classes: int) -> np.ndarray:
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}.")
    y = v.labels(labels, "labels")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {int(y[i])} at index {i}.")
    return y


def intersection_codes(labels: Mapping[str, object], n_classes: Mapping[str, int]
                       ) -> tuple[np.ndarray, int]:
    """One cell index per sample for several attributes, and the number of cells."""
    names = list(labels)
    arrays = [_checked(labels[n], n_classes[n]) for n in names]
    v.same_length(**dict(zip(names, arrays)))
    shape = tuple(int(n_classes[n]) for n in names)
    codes = np.ravel_multi_index(tuple(arrays), shape) if arrays[0].size else arrays[0]
    return np.asarray(codes, dtype=np.int64), int(np.prod(shape))


def fairness_discrepancy_bootstrap(labels: object, n_classes: int, seed: int, repeat: int = 500
                                   ) -> list[float]:
    """[median, std] of the discrepancy over resamples drawn as the other bootstraps draw them."""
    y = _checked(labels, n_classes)
    n = len(y)
    if n == 0:
        return [float("nan"), float("nan")]
    rng = np.random.RandomState(seed)
    idx = np.stack([rng.randint(0, n, n) for _ in range(repeat)])
    cells = (np.arange(repeat)[:, None] * n_classes + y[idx]).ravel()
    p = np.bincount(cells, minlength=repeat * n_classes).reshape(repeat, n_classes) / n
    d = np.linalg.norm(p - 1.0 / n_classes, axis=1)
    return [float(np.median(d)), float(np.std(d))]
