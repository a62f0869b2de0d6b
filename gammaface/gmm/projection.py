"""Optional PCA space for the mixture, and the way back to latent space.

A sample in PCA space maps back as mean + components^T z plus isotropic Gaussian noise with the
variance the projection discarded, so a sample keeps the latents' total variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Projection:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (p, d), orthonormal rows
    residual_variance: float  # per discarded dimension

    @classmethod
    def fit(cls, X: np.ndarray, dim: int, seed: int = 0) -> Projection:
        from sklearn.decomposition import PCA

        if dim >= X.shape[1] or dim > X.shape[0]:
            raise ValueError(f"gmm.pca_dim = {dim} must be below both the latent size "
                             f"({X.shape[1]}) and the number of latents ({X.shape[0]}).")
        pca = PCA(n_components=dim, random_state=seed, svd_solver="randomized").fit(X)
        total = float(np.var(X, axis=0).sum())
        kept = float(pca.explained_variance_.sum())
        residual = max(total - kept, 0.0) / (X.shape[1] - dim)
        return cls(pca.mean_.astype(np.float32), pca.components_.astype(np.float32), residual)

    def to_space(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) @ self.components.T

    def back(self, Z: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        X = Z @ self.components + self.mean
        if rng is not None and self.residual_variance > 0:
            noise = rng.standard_normal(X.shape) * np.sqrt(self.residual_variance)
            noise -= (noise @ self.components.T) @ self.components  # only the discarded directions
            X = X + noise
        return X.astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, components=self.components,
                 residual_variance=np.array(self.residual_variance))

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["components"], float(z["residual_variance"]))
