"""Stage `harvest`: x_{t*} for `harvest.n` rows -> `latents/` shards and `index.parquet`.

`forward`: training images noised to t* with q(x_t | x_0) (the paper's experiments section);
`reverse`: x_T ~ N(0, I) run down to t* with the trained DDPM (its method section). A Ray Data
pipeline over row ids feeds an actor pool whose actors load the DDPM once; each actor writes
its batch as one shard and returns only the index rows, so the driver never holds the latents.
A row's latent depends only on (seed, row): its noise comes from its own generator.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from gammaface import layout, tracking
from gammaface.config import Config
from gammaface.data import manifest
from gammaface.diffusion.images import load_resized, to_model_space
from gammaface.diffusion.model_io import load_ddpm
from gammaface.diffusion.sampler import effective_t, forward_noise, make_scheduler, reverse, row_generators
from gammaface.errors import UserError
from gammaface.latents import store
from gammaface.ray_runtime import actor_resources, connect
from gammaface.stage import StageResult
from gammaface.storage import Store


def row_seed(seed: int, row: int) -> int:
    return int(np.random.SeedSequence([seed, 7, row]).generate_state(1, np.uint64)[0] >> 1)


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


def harvest_latents(cfg: Config, ddpm_dir: str, manifest_path: str, out: Store,
                    t_star: int | None = None, source: str | None = None,
                    echo: Any = print) -> dict[str, Any]:
    """Run the harvest into `out`; returns its meta record (also written as meta.json). The
    record names the manifest by its workdir-relative path; readers resolve it in their own
    workdir."""
    import ray

    h = cfg.harvest
    t_star = h.t_star if t_star is None else t_star
    source = source or h.source
    unet, train_sched = load_ddpm(ddpm_dir)
    num_train = int(train_sched.config.num_train_timesteps)
    if not 0 < t_star < num_train:
        raise UserError(f"harvest.t_star = {t_star} must lie between 1 and {num_train - 1}.")
    t_eff = effective_t(make_scheduler(train_sched, "ddim"), h.steps, t_star)
    size = int(unet.config.sample_size)
    df, image_root = manifest.read(manifest_path)
    paths = list(df.loc[df["split"] == "train", "path"]) if source == "forward" else []
    if source == "forward" and not paths:
        raise UserError(f"{manifest_path} has no train images to noise forward.")
    out.makedirs()
    for old in (store.INDEX_FILE, store.META_FILE):
        out.delete(old)
    out.delete(store.SHARD_DIR)

    cpus, threads = actor_resources(h.concurrency, h.num_gpus)
    ds = ray.data.range(h.n, override_num_blocks=max(1, math.ceil(h.n / h.batch_size)))
    ds = ds.map_batches(
        HarvestBatch, batch_size=h.batch_size, batch_format="numpy",
        fn_constructor_kwargs=dict(ddpm_dir=str(ddpm_dir), out_uri=out.uri(), source=source,
                                   t_star=t_eff, steps=h.steps, eta=h.eta, seed=cfg.seed,
                                   image_root=image_root, paths=paths, threads=threads,
                                   use_gpu=h.num_gpus > 0),
        compute=ray.data.ActorPoolStrategy(size=h.concurrency), num_cpus=cpus,
        num_gpus=h.num_gpus)
    parts, done, start = [], 0, time.perf_counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        parts.append(batch)
        done += len(batch)
        rate = done / max(time.perf_counter() - start, 1e-9)
        echo(f"  harvested {done}/{h.n} ({rate:.0f}/s, ETA {(h.n - done) / max(rate, 1e-9):.0f} s)")
    index = pd.concat(parts, ignore_index=True).sort_values("row").reset_index(drop=True)
    out.write_parquet(store.INDEX_FILE, index[list(store.INDEX_COLUMNS)])
    meta = {"source": source, "t_star_requested": t_star, "t_star": t_eff, "steps": h.steps,
            "eta": h.eta, "n": int(len(index)), "shape": [3, size, size],
            "manifest": layout.manifest_path(cfg),
            "seed": cfg.seed}
    out.write_json(store.META_FILE, meta)
    return meta


def run(cfg: Config, workdir: Store) -> StageResult:
    connect(cfg.ray)
    out = workdir.sub(layout.stage_dir("harvest", cfg))
    ddpm_dir = workdir.path(layout.stage_dir("train_ddpm", cfg))
    manifest_path = workdir.path(layout.manifest_path(cfg))
    started = time.perf_counter()
    meta = harvest_latents(cfg, ddpm_dir, manifest_path, out, echo=_throttled_echo())
    seconds = time.perf_counter() - started
    tracking.log_params({"harvest.t_star_used": meta["t_star"]})
    tracking.log_metrics({"latents": meta["n"], "latents_per_s": meta["n"] / max(seconds, 1e-9)})
    return StageResult("harvest", rows={"latents": meta["n"]},
                       outputs={"index": out.uri(store.INDEX_FILE)},
                       metrics={"t_star": float(meta["t_star"])})


def _throttled_echo(every_s: float = 5.0):
    last = [0.0]

    def echo(line: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            print(line, flush=True)
            last[0] = now

    return echo
