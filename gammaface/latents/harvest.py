"""Latents x_{t*}, a batch of rows at a time: `forward` noises training images to t* with
q(x_t | x_0) (the paper's experiments section); `reverse` runs x_T ~ N(0, I) down to t* with the
trained DDPM (its method section). A row's latent depends only on (seed, row): its noise comes
from its own generator, and its source image from a seeded permutation per pass.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from gammaface.diffusion.model_io import load_ddpm
from gammaface.diffusion.sampler import forward_noise, make_scheduler, reverse, row_generators
from gammaface.common.images import load_resized, to_model_space
from gammaface.latents import store
from gammaface.common.seeds import seed_of
from gammaface.storage.store import Store


def row_seed(seed: int, row: int) -> int:
    return seed_of(seed, 7, row)


@functools.lru_cache(maxsize=8)
def _pass_order(n_train: int, seed: int, pass_no: int) -> np.ndarray:
    return np.random.default_rng([seed, 11, pass_no]).permutation(n_train)


def source_images(rows: np.ndarray, n_train: int, seed: int) -> np.ndarray:
    """Train-image index of each row: a seeded permutation of the train split per pass over it,
    so rows beyond the split's size revisit images in a new order with fresh noise."""
    passes, positions = np.divmod(np.asarray(rows, dtype=np.int64), n_train)
    return np.array([_pass_order(n_train, seed, int(p))[i] for p, i in zip(passes, positions)],
                    dtype=np.int64)


class HarvestBatch:
    """Ray Data actor: loads the DDPM once, then maps a batch of row ids to a written shard."""

    def __init__(self, ddpm_dir: str, out_uri: str, source: str, t_star: int, steps: int,
                 eta: float, seed: int, image_root: str, paths: list[str], threads: int,
                 use_gpu: bool) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.unet, train_sched = load_ddpm(ddpm_dir)
        self.unet.to(self.device)
        self.sched = make_scheduler(train_sched, "ddim")
        self.train_sched = train_sched
        self.out = Store(out_uri)
        self.source, self.t_star, self.steps, self.eta, self.seed = source, t_star, steps, eta, seed
        self.image_root, self.paths = image_root, paths
        self.size = int(self.unet.config.sample_size)

    def latents(self, rows: np.ndarray, seeds: list[int]) -> tuple[torch.Tensor, list[str]]:
        gens = row_generators(seeds)
        if self.source == "forward":
            picks = source_images(rows, len(self.paths), self.seed)
            chosen = [self.paths[i] for i in picks]
            x0 = to_model_space(load_resized(self.image_root, chosen, self.size))
            return forward_noise(x0, self.t_star, self.train_sched, gens), chosen
        x_T = torch.stack([torch.randn(3, self.size, self.size, generator=g) for g in gens])
        num_train = int(self.sched.config.num_train_timesteps)
        x = reverse(self.unet, self.sched, x_T, num_train, self.t_star, self.steps, gens, self.eta)
        return x.cpu(), [""] * len(rows)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = np.asarray(batch["id"], dtype=np.int64)
        seeds = [row_seed(self.seed, int(r)) for r in rows]
        x, chosen = self.latents(rows, seeds)
        flat = x.reshape(len(rows), -1).numpy()
        shard = store.write_shard(self.out, int(rows[0]), flat)
        return {"row": rows, "shard": np.array([shard] * len(rows)),
                "offset": np.arange(len(rows)), "seed": np.array(seeds),
                "source_path": np.array(chosen)}
