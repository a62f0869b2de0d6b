"""Stage `train_ddpm`: the manifest's train split -> `ddpm/` (diffusers layout + samples.png).

Training runs in Ray Train's TorchTrainer (DDP over gloo on CPU workers, NCCL on GPUs). Ray
Train keeps its checkpoints under `ddpm/ray_train/<run name>` (in the bucket itself where the
workdir is remote), where the run name carries the stage's config hash: rerunning the same
config resumes from the latest checkpoint, on any machine, another config starts afresh.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from gammaface.run import layout, tracking
from gammaface.distributed import train as ray_train
from gammaface.config import Config
from gammaface.data import manifest
from gammaface.diffusion.model_io import PIPELINE_FILES, save_ddpm
from gammaface.diffusion.presets import unet_config
from gammaface.diffusion.train_loop import loop_config, sample_images, train_loop_per_worker
from gammaface.common.errors import UserError
from gammaface.common.images import encode_png, square_grid
from gammaface.distributed.runtime import connect
from gammaface.run.stage import StageContext, StageResult

FINAL_SAMPLES = 64


def _cpus_per_worker(cfg: Config) -> int:
    return ray_train.cpus_per_worker(cfg.ddpm.cpus_per_worker, cfg.ddpm.use_gpu, cfg.ddpm.num_workers)


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    connect(cfg.ray)
    out = ctx.local_out("writes its model through a local folder")
    out.makedirs()
    df, image_root = manifest.read(ctx.manifest_path)
    train = df.loc[df["split"] == "train", ["path"]]
    if len(train) < cfg.ddpm.num_workers:
        raise UserError(f"the train split has {len(train)} images, fewer than ddpm.num_workers.")
    h = ctx.hash
    loop_cfg = loop_config(cfg.ddpm, unet_config(cfg.ddpm.preset, cfg.ddpm_resolution), cfg.seed,
                           h, image_root, _cpus_per_worker(cfg), tracking.worker_run())
    n_params = sum(p.numel() for p in UNet2DModel(**loop_cfg["unet"]).parameters())
    tracking.log_params({"ddpm.resolution_used": loop_cfg["unet"]["sample_size"],
                         "ddpm.parameters": n_params})
    tracking.log_dataset(df[df["split"] == "train"], ctx.manifest_path, "DDPM train split",
                         "training")
    d = cfg.ddpm
    final, _ = ray_train.fit(train_loop_per_worker, loop_cfg, num_workers=d.num_workers,
                             use_gpu=d.use_gpu, cpus_per_worker=loop_cfg["threads"],
                             storage_path=ctx.checkpoints(), name=f"ddpm-{h}",
                             max_failures=d.max_failures, what="ddpm",
                             resources=cfg.ray.placed("train_ddpm"), table=train)
    with ray_train.final_files(final) as folder:
        state = ray_train.checkpoint_state(folder, h)
        ema = ray_train.load_weights(folder, ray_train.EMA_FILE)

    unet = UNet2DModel(**loop_cfg["unet"])
    unet.load_state_dict(ema)
    scheduler = DDPMScheduler(**loop_cfg["scheduler"])
    save_ddpm(Path(out.path()), unet, scheduler)
    device = torch.device("cuda" if cfg.ddpm.use_gpu and torch.cuda.is_available() else "cpu")
    samples = sample_images(loop_cfg["unet"], ema, loop_cfg["scheduler"], FINAL_SAMPLES,
                            cfg.ddpm.sample_steps, cfg.seed, device)
    out.write_bytes(layout.DDPM_SAMPLES, encode_png(square_grid(samples)))
    tracking.log_artifact(out.path(layout.DDPM_SAMPLES))
    tracking.register_ddpm(out.path(), list(PIPELINE_FILES), loop_cfg["unet"]["sample_size"],
                           tracking.registered_name(cfg, "ddpm"))
    return StageResult("train_ddpm", rows={"train_images": len(train), "steps": int(state["step"])},
                       outputs={"unet": out.uri("unet"), "samples": out.uri(layout.DDPM_SAMPLES)},
                       metrics={"parameters": float(n_params)})
