"""How well an attribute classifier labels a test set: accuracy per attribute and recall per
class, on the images as they are and degraded the way generated images are."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gammaface.classifiers.augment import degrade
from gammaface.classifiers.labeller import Labeller
from gammaface.classifiers.labels import MISSING, encode
from gammaface.data import registry
from gammaface.common.images import to_model_space

DEGRADED_SEED = 12345


def score(labeller: Labeller, images: np.ndarray | torch.Tensor, df: pd.DataFrame) -> dict[str, float]:
    """Accuracy per attribute and recall per class (keys `accuracy/<attr>`,
    `recall/<attr>/<class>`), over rows where the attribute is known."""
    preds = labeller.predict(images)
    out: dict[str, float] = {}
    codes = encode(df, labeller.attributes)
    for j, name in enumerate(labeller.attributes):
        y = codes[:, j]
        known = y != MISSING
        if not known.any():
            continue
        hit = preds[name].classes[known] == y[known]
        out[f"accuracy/{name}"] = float(hit.mean())
        for c, cls in enumerate(registry.get(name).classes):
            mine = y[known] == c
            if mine.any():
                out[f"recall/{name}/{cls}"] = float(hit[mine].mean())
    return out


def degraded(images: np.ndarray, seed: int = DEGRADED_SEED) -> torch.Tensor:
    """Every image degraded (p = 1), reproducibly, as float NCHW."""
    return degrade(to_model_space(images), torch.Generator().manual_seed(seed), p=1.0)
