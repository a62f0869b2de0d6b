"""The judge: an attribute classifier that takes no part in making, choosing or labelling
generated images, so that the balance it measures is not the labeller grading its own picks.

For SynthFaces it learns from a fresh render with its own seed; for FFHQ and FairFace from a
share of the train split that the labeller never sees, picked by a hash of each path (stable
under any reordering of the manifest)."""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def judge_rows(paths: Iterable[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: the rows that belong to the judge."""
    out = []
    for p in paths:
        digest = hashlib.sha256(f"{seed}|{p}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction)
    return np.array(out, dtype=bool)
