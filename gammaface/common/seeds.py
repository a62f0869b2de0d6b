"""Seeds derived from integers, the same on every process and platform: every random draw of
the package (data order, noise, plans, mixing) is seeded from (seed, purpose, index, ...), so
a resumed run draws what an uninterrupted one would have."""

from __future__ import annotations

import numpy as np


def seed_of(*parts: int) -> int:
    """A 63-bit seed derived from integers."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def batch_indices(step: int, n: int, batch: int, seed: int, rank: int) -> np.ndarray:
    """Rows of step `step`: consecutive slices of one permutation per epoch, epochs chained."""
    out: list[np.ndarray] = []
    start, needed = step * batch, batch
    while needed:
        epoch, offset = divmod(start, n)
        perm = np.random.default_rng([seed, rank, epoch]).permutation(n)
        take = perm[offset:offset + needed]
        out.append(take)
        start += len(take)
        needed -= len(take)
    return np.concatenate(out)
