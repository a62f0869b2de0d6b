"""Diagonal Gaussian mixtures (EM in torch, scikit-learn's as reference) and the BIC search."""

from gammaface.gmm.mixture import GaussianMixture

__all__ = ["GaussianMixture"]
