"""The DDPM training loop (the paper's eq. 5: epsilon prediction with MSE).

`train_step` is plain torch. `train_loop_per_worker` is the function Ray Train runs on every
worker: it reads this worker's share of the training rows (through Ray Data), restores the latest
checkpoint when there is one, reads each step's images from storage as it goes, and reports
checkpoints through `ray.train.report`. Data order, flips, noise and
timesteps of a step are drawn from generators seeded by (seed, rank, step), so a run resumed
from a checkpoint takes exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from gammaface.distributed import train as ray_train
from gammaface.diffusion.ema import Ema
from gammaface.diffusion.sampler import make_scheduler, reverse, row_generators
from gammaface.common.images import load_resized, square_grid, to_model_space, to_uint8
from gammaface.common.progress import progress
from gammaface.distributed.train import CheckpointError
from gammaface.common.seeds import batch_indices, seed_of

GRID_SAMPLES = 16


def train_step(model: torch.nn.Module, noise_scheduler: DDPMScheduler, batch: np.ndarray,
               generator: torch.Generator, device: torch.device, amp: bool) -> torch.Tensor:
    """Loss of one batch (uint8 NHWC) with a random flip, timestep and noise per image."""
    x0 = to_model_space(batch)
    n = x0.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), generator=generator)
    xt = noise_scheduler.add_noise(x0, noise, t)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        pred = model(xt.to(device), t.to(device)).sample
    return torch.nn.functional.mse_loss(pred.float(), noise.to(device))


def lr_factor(step: int, warmup_steps: int, train_steps: int, schedule: str) -> float:
    """The learning rate of `step` as a share of the configured one: a linear warmup, then
    constant or a cosine that reaches 0 at `train_steps`."""
    warmup = max(1, warmup_steps)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or train_steps <= warmup:
        return 1.0
    done = min(1.0, (step - warmup) / (train_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * done))


def sample_images(unet_config: dict[str, Any], weights: dict[str, torch.Tensor],
                  scheduler_config: dict[str, Any], n: int, steps: int, seed: int,
                  device: torch.device) -> np.ndarray:
    """n samples (uint8 NHWC) of a UNet with the given weights, DDIM eta 0 from x_T."""
    unet = UNet2DModel(**unet_config)
    unet.load_state_dict({k: v.to(unet.state_dict()[k].dtype) for k, v in weights.items()})
    unet.to(device)
    sched = make_scheduler(DDPMScheduler.from_config(scheduler_config), "ddim")
    size = unet_config["sample_size"]
    gens = row_generators([seed_of(seed, i) for i in range(n)])
    x = torch.stack([torch.randn(3, size, size, generator=g) for g in gens])
    out = reverse(unet, sched, x, sched.config.num_train_timesteps, 0, steps)
    return to_uint8(out)


def _restore(folder: Path, cfg: dict[str, Any], model: torch.nn.Module, ema: Ema
             ) -> tuple[int, dict[str, Any]]:
    state = ray_train.checkpoint_state(folder, cfg["config_hash"])
    try:
        model.load_state_dict(ray_train.load_weights(folder, ray_train.MODEL_FILE))
        ema.load_state_dict(ray_train.load_weights(folder, ray_train.EMA_FILE))
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the configured UNet ({str(exc).splitlines()[0]}).") from None
    return int(state["step"]), ray_train.load_optimizer(folder)


def loop_config(ddpm: Any, unet: dict[str, Any], seed: int, config_hash: str, image_root: str,
                threads: int, log: ray_train.Log | None = None) -> dict[str, Any]:
    """What `train_loop_per_worker` reads besides its rows: the settings of the config's `ddpm`
    section, the UNet's config, where the images lie and where rank 0 logs. The rows (a `path`
    per training image, relative to `image_root`) go to `ray_train.fit` as its table."""
    d = ddpm
    return {
        "unet": unet,
        "scheduler": {"num_train_timesteps": d.num_train_timesteps, "beta_schedule": d.beta_schedule},
        "train_steps": d.train_steps, "batch_size": d.batch_size, "learning_rate": d.learning_rate,
        "warmup_steps": d.warmup_steps, "lr_schedule": d.lr_schedule, "grad_clip": d.grad_clip,
        "ema_decay": d.ema_decay,
        "checkpoint_every": d.checkpoint_every, "sample_every": d.sample_every,
        "sample_steps": d.sample_steps, "log_every": d.log_every, "use_gpu": d.use_gpu,
        "seed": seed, "config_hash": config_hash, "image_root": image_root,
        "threads": threads, "log": log,
    }


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])
    device = ray.train.torch.get_device() if cfg["use_gpu"] else torch.device("cpu")
    amp = device.type == "cuda"
    share = list(ray_train.worker_rows(rank, world)["path"])
    if not share:
        raise ValueError(f"worker {rank} has no training images; use fewer workers.")
    local_batch = math.ceil(cfg["batch_size"] / world)

    noise_scheduler = DDPMScheduler(**cfg["scheduler"])
    torch.manual_seed(seed_of(cfg["seed"], 0))  # the same initial weights for the same seed
    model = UNet2DModel(**cfg["unet"])
    ema = Ema(model, cfg["ema_decay"])
    step, optimizer_state = 0, None
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d:
            step, optimizer_state = _restore(Path(d), cfg, model, ema)
    ddp = ray.train.torch.prepare_model(model) if cfg["use_gpu"] or world > 1 else model
    core = ddp.module if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) else ddp
    ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=cfg["learning_rate"], weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg["warmup_steps"], cfg["train_steps"], cfg["lr_schedule"]))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        lr_schedule.load_state_dict(optimizer_state["lr_schedule"])
    log = ray_train.rank_log(cfg, rank)
    if rank == 0 and step:
        print(f"resuming DDPM training from step {step}", flush=True)

    ddp.train()
    bar = progress(cfg["train_steps"], "DDPM steps", unit="step", initial=step,
                   disable=rank != 0)
    losses: list[float] = []
    tick, tick_step = time.perf_counter(), step
    throughput = {"images_per_s": 0.0}

    def images_of(s: int) -> np.ndarray:
        rows = batch_indices(s, len(share), local_batch, cfg["seed"], rank)
        # on the read-ahead thread already: a pool of its own would only compete for the cores
        return load_resized(cfg["image_root"], [share[i] for i in rows], cfg["unet"]["sample_size"],
                            workers=1)

    batches = ray_train.read_ahead(images_of, range(step, cfg["train_steps"]))
    while step < cfg["train_steps"]:
        gen = torch.Generator().manual_seed(seed_of(cfg["seed"], rank, step, 1))
        loss = train_step(ddp, noise_scheduler, next(batches), gen, device, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), cfg["grad_clip"])
        optimizer.step()
        lr_schedule.step()
        ema.update(core, step)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if rank == 0 and (step % cfg["log_every"] == 0 or step == cfg["train_steps"]):
            elapsed = time.perf_counter() - tick
            ips = (step - tick_step) * local_batch * world / max(elapsed, 1e-9)
            throughput["images_per_s"] = ips
            log.metrics({"loss": float(np.mean(losses)), "lr": float(lr_schedule.get_last_lr()[0]),
                         "images_per_s": ips}, step)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", img_s=f"{ips:.0f}", refresh=False)
            losses, tick, tick_step = [], time.perf_counter(), step
        if step % cfg["checkpoint_every"] == 0 or step == cfg["train_steps"]:
            _report(cfg, rank, world, step, core, ema, optimizer, lr_schedule, throughput)
        if rank == 0 and cfg["sample_every"] and step % cfg["sample_every"] == 0 \
                and step < cfg["train_steps"]:
            grid_img = square_grid(sample_images(cfg["unet"], ema.state_dict(), cfg["scheduler"],
                                           GRID_SAMPLES, cfg["sample_steps"], cfg["seed"], device))
            log.image(grid_img, "samples", step=step)
    bar.close()


def _report(cfg: dict[str, Any], rank: int, world: int, step: int, model: torch.nn.Module,
            ema: Ema, optimizer: torch.optim.Optimizer, lr_schedule: Any,
            extra: dict[str, float]) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            ray_train.save_checkpoint(Path(d), model.state_dict(), ema.state_dict(),
                            {"optimizer": optimizer.state_dict(),
                             "lr_schedule": lr_schedule.state_dict()},
                            {"step": step, "config_hash": cfg["config_hash"], "world_size": world})
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"step": step, **extra}, checkpoint=ckpt)
