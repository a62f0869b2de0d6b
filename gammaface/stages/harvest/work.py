"""Stage `harvest`: x_{t*} for `harvest.n` rows -> `latents/` shards and `index.parquet`.

`harvest.source` `forward` noises training images to t*, `reverse` runs the DDPM down from x_T
(`latents.harvest`). A Ray Data pipeline over row ids feeds an actor pool whose actors load the
DDPM once; each actor writes its batch as one shard and returns only the index rows, so the
driver never holds the latents.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import pandas as pd

from gammaface.run import layout, tracking
from gammaface.data import manifest
from gammaface.diffusion.model_io import load_ddpm
from gammaface.diffusion.sampler import effective_t, make_scheduler
from gammaface.common.errors import UserError
from gammaface.latents import store
from gammaface.latents.harvest import HarvestBatch
from gammaface.distributed.runtime import actor_resources, connect, placement
from gammaface.run.stage import StageContext, StageResult


def _harvest(ctx: StageContext, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the harvest into the stage's folder; returns its meta record (also written as
    meta.json). The record names the manifest by its workdir-relative path; readers resolve it
    in their own workdir."""
    import ray

    cfg, out = ctx.cfg, ctx.out
    h = cfg.harvest
    t_star, source = h.t_star, h.source
    ddpm_dir, manifest_path = ctx.folder("train_ddpm").path(), ctx.manifest_path
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
        num_gpus=h.num_gpus, **placement(cfg, "harvest"))
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


def run(ctx: StageContext) -> StageResult:
    connect(ctx.cfg.ray)
    out = ctx.out
    started = time.perf_counter()
    meta = _harvest(ctx, _throttled(ctx.echo))
    seconds = time.perf_counter() - started
    tracking.log_params({"harvest.t_star_used": meta["t_star"]})
    tracking.log_metrics({"latents": meta["n"], "latents_per_s": meta["n"] / max(seconds, 1e-9)})
    return StageResult("harvest", rows={"latents": meta["n"]},
                       outputs={"index": out.uri(store.INDEX_FILE)},
                       metrics={"t_star": float(meta["t_star"])})


def _throttled(echo_: Callable[[str], None], every_s: float = 5.0) -> Callable[[str], None]:
    last = [0.0]

    def echo(line: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            echo_(line)
            last[0] = now

    return echo
