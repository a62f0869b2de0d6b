"""Degradations that make clean training images look like generated ones: blur, lower contrast
and saturation, and pixel noise. A labeller trained only on clean images mislabels blurred, pale
generated faces systematically, so training sees these with probability `p` per image.

All operations work on float NCHW batches in [-1, 1] and draw from an explicit generator, so a
step's augmentation is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x[None, :] / sigmas[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(dim=1, keepdim=True)  # (N, 2r+1)


def blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (reflect padding)."""
    n, c, h, w = x.shape
    radius = max(1, min(int(torch.ceil(2 * sigmas.max()).item()), min(h, w) // 2 - 1))
    k = _gaussian_kernels(sigmas, radius).to(x)
    # one group per (image, channel): every image gets its own kernel
    weight = k.repeat_interleave(c, dim=0)
    y = x.reshape(1, n * c, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, weight[:, None, None, :], groups=n * c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, weight[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def degrade(x: torch.Tensor, generator: torch.Generator, p: float = 0.5,
            max_sigma: float = 1.2, min_contrast: float = 0.5, min_saturation: float = 0.3,
            max_noise: float = 0.1) -> torch.Tensor:
    """A random degradation of each image with probability p; the others pass unchanged."""
    n = x.shape[0]
    on = (torch.rand(n, generator=generator) < p).to(x)[:, None, None, None]
    u = torch.rand(n, 4, generator=generator).to(x)
    sigma = u[:, 0] * max_sigma
    contrast = min_contrast + (1 - min_contrast) * u[:, 1]
    saturation = min_saturation + (1 - min_saturation) * u[:, 2]
    noise_sd = u[:, 3] * max_noise
    y = blur(x, sigma)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = mean + contrast[:, None, None, None] * (y - mean)
    gray = _gray(y)
    y = gray + saturation[:, None, None, None] * (y - gray)
    y = y + noise_sd[:, None, None, None] * torch.randn(x.shape, generator=generator).to(x)
    y = y.clamp(-1, 1)
    return on * y + (1 - on) * x
