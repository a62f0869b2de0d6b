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
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        # a singular product: nudge both covariances, as the reference FID code does
        offset = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError("features must be an (N, d) array with N >= 2.")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_between(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))
