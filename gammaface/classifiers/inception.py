"""Inception FID, only where it can be computed without a download: torchmetrics installed and
the FID Inception weights already on disk (`GAMMAFACE_INCEPTION_WEIGHTS`, else torch's hub
cache). Otherwise the caller gets the reason it was skipped, for the report."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

WEIGHTS_ENV = "GAMMAFACE_INCEPTION_WEIGHTS"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # the weights torchmetrics' FID uses


def weights_path() -> Path:
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        return Path(explicit)
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return hub / "hub" / "checkpoints" / WEIGHTS_NAME


def unavailable() -> str | None:
    """Why Inception FID cannot be computed here, or None when it can."""
    if importlib.util.find_spec("torchmetrics") is None:
        return "torchmetrics is not installed (pip install 'gammaface[fid]')"
    if not weights_path().is_file():
        return f"no Inception weights at {weights_path()} (set {WEIGHTS_ENV}; nothing is downloaded)"
    return None


def inception_fid(real: np.ndarray, fake: np.ndarray, batch: int = 64) -> float:
    """FID between two uint8 NHWC image sets; call only when `unavailable()` is None."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights_path()))
    for images, is_real in ((real, True), (fake, False)):
        for s in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch])).permute(0, 3, 1, 2)
            fid.update(x, real=is_real)
    return float(fid.compute())
