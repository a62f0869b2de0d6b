"""A method's plan: how many images each component gets, cut into shards of one component each.

The plan is a pure function of the config and the mixture, written before any image, so the
content of a run is fixed before it starts; a shard's seed comes from (generate.seed, method,
shard id) alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Callable, Literal

import numpy as np

from gammaface.config import QUOTA_METHODS, Config, quota_attributes, quota_draw, uses_labeller
from gammaface.seeds import seed_of

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


# What a key reads besides settings, by what it is rather than by the stage that makes it:
# the prepared dataset, the DDPM, the labeller, the mixture. The caller hashes each.
Input = Literal["data", "ddpm", "labeller", "mixture"]


def method_key(cfg: Config, method: str, hash_of: Callable[[Input], str]) -> str:
    """The hash of exactly what one method's images depend on, so that a setting another
    method reads (alpha, protected, pilot), or one that changes no image (grid), redoes none
    of this method's shards. `hash_of` gives the config hash of each input it reads."""
    g = cfg.generate
    quota = method in QUOTA_METHODS
    size = "generate.quota.n" if quota and g.quota.n is not None else "generate.n"
    keys = [size, "generate.steps", "generate.eta", "generate.shard_size", "generate.seed"]
    if quota:  # kept by the labeller's cells, from their proposal
        # not the budget nor the round limit: they only cut the rounds short, and every shard
        # is checked against its plan record, so a larger budget renders only the new rounds
        keys += ["generate.quota.cells", "generate.quota.shares", "generate.quota.min_confidence"]
        if g.quota.exit_checks:  # which renders stop early (none: a set made without checks)
            keys += ["generate.quota.exit_checks", "generate.quota.exit_below"]
        if g.quota.min_confidence is None:
            keys.append("label.min_confidence")
        if quota_attributes(cfg) == list(g.protected):
            keys.append("generate.protected")  # the components' compositions are the prior
        upstream: list[Input] = ["labeller"]
        if method == "quota_unconditional":
            upstream.append("ddpm")
        else:
            upstream.append("mixture")
            keys.append("generate.quota.draw" if g.quota.draw else "generate.draw")
            if quota_draw(cfg) == "gaussian":
                keys.append("generate.temperature")
            elif g.quota.t_start is not None:
                keys.append("generate.quota.t_start")
    elif method == "unconditional":  # pure DDPM samples from T: no latents, no mixture
        upstream = ["ddpm"]
    elif method == "stratified":  # train images noised to the harvest's t*
        upstream = ["ddpm"]
        keys += ["harvest.t_star", "generate.protected"]
    else:
        upstream = ["mixture"]
        keys.append("generate.draw")
        if g.draw == "gaussian":
            keys.append("generate.temperature")
        if method == "gmm_tempered":
            keys.append("generate.alpha")
        if method == "gmm_attr":
            keys.append("generate.protected")
            if uses_labeller(cfg):
                keys.append("generate.pilot")
                upstream.append("labeller")
    parts = [method, cfg.section_hash(*keys), *(hash_of(n) for n in upstream)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
