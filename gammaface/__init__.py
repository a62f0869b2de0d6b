"""gammaface: GMM-amended diffusion sampling for bias mitigation in face images, on Ray."""

__version__ = "0.1.0"
