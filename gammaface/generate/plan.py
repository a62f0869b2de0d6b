"""A method's plan: how many images each component gets, cut into shards of one component each.

The plan is a pure function of the config and the mixture, written before any image, so the
content of a run is fixed before it starts; a shard's seed comes from (generate.seed, method,
shard id) alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gammaface.common.seeds import seed_of

NO_COMPONENT = -1  # unconditional samples belong to no component


def counts_from_weights(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, proportional to `weights` (largest remainder; ties go to
    the lower index, so equal weights give the remainder to the first components)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}.")
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:short]:
        counts[i] += 1
    return counts


def tempered(weights: np.ndarray, alpha: float) -> np.ndarray:
    """pi^alpha, normalised: alpha = 1 keeps the mixture's weights, alpha = 0 makes them equal."""
    w = np.asarray(weights, dtype=np.float64) ** alpha
    return w / w.sum()


@dataclass(frozen=True)
class Shard:
    method: str
    shard: int
    component: int
    count: int  # renders
    seed: int
    open_cells: str = ""  # quota shards: the cells (codes, comma-separated) open at planning

    @property
    def name(self) -> str:
        return f"shard-{self.shard:05d}"

    def record(self) -> dict:
        return asdict(self)


def make_plan(method: str, method_index: int, counts: np.ndarray, components: list[int],
              shard_size: int, seed: int) -> list[Shard]:
    """Shards in component order; a component's images are cut into shards of `shard_size`."""
    shards: list[Shard] = []
    for comp, count in zip(components, counts):
        left = int(count)
        while left > 0:
            take = min(shard_size, left)
            sid = len(shards)
            shards.append(Shard(method, sid, int(comp), take, seed_of(seed, 17, method_index, sid)))
            left -= take
    return shards


def image_seed(shard_seed: int, i: int) -> int:
    return seed_of(shard_seed, i)
