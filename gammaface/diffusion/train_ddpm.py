"""Stage `train_ddpm`: the manifest's train split -> `ddpm/` (diffusers layout + samples.png).

Training runs in Ray Train's TorchTrainer (DDP over gloo on CPU workers, NCCL on GPUs). Ray
Train keeps its checkpoints under `ddpm/ray_train/<run name>`, where the run name carries the
stage's config hash: rerunning the same config resumes from the latest checkpoint, another
config starts afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import torch
from diffusers import DDPMScheduler, UNet2DModel

from gammaface import layout, ray_train, tracking
from gammaface.config import Config
from gammaface.data import manifest
from gammaface.diffusion import checkpoint
from gammaface.diffusion.model_io import save_ddpm
from gammaface.diffusion.presets import unet_config
from gammaface.diffusion.train_loop import png_bytes, sample_images, sample_sheet, train_loop_per_worker
from gammaface.errors import UserError
from gammaface.ray_runtime import connect
from gammaface.stage import StageResult
from gammaface.storage import Store

SAMPLES_FILE = "samples.png"
FINAL_SAMPLES = 64
RAY_TRAIN_DIR = "ray_train"


def _cpus_per_worker(cfg: Config) -> int:
    return ray_train.cpus_per_worker(cfg.ddpm.cpus_per_worker, cfg.ddpm.use_gpu, cfg.ddpm.num_workers)


def loop_config(cfg: Config, config_hash: str, paths: list[str], image_root: str,
                threads: int) -> dict[str, Any]:
    d = cfg.ddpm
    unet = unet_config(d.preset, cfg.ddpm_resolution)  # checked when the config loaded
    run = mlflow.active_run()
    return {
        "unet": unet,
        "scheduler": {"num_train_timesteps": d.num_train_timesteps, "beta_schedule": d.beta_schedule},
        "train_steps": d.train_steps, "batch_size": d.batch_size, "learning_rate": d.learning_rate,
        "warmup_steps": d.warmup_steps, "grad_clip": d.grad_clip, "ema_decay": d.ema_decay,
        "checkpoint_every": d.checkpoint_every, "sample_every": d.sample_every,
        "sample_steps": d.sample_steps, "log_every": d.log_every, "use_gpu": d.use_gpu,
        "seed": cfg.seed, "config_hash": config_hash, "paths": paths, "image_root": image_root,
        "threads": threads, "mlflow_uri": mlflow.get_tracking_uri(),
        "mlflow_run_id": run.info.run_id if run else None,
    }


def fit(cfg: Config, loop_cfg: dict[str, Any], storage_path: str, name: str
        ) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) the TorchTrainer; returns a local copy of the final checkpoint's folder
    and rank 0's last reported metrics."""
    d = cfg.ddpm
    return ray_train.fit(train_loop_per_worker, loop_cfg, num_workers=d.num_workers,
                         use_gpu=d.use_gpu, cpus_per_worker=loop_cfg["threads"],
                         storage_path=storage_path, name=name, max_failures=d.max_failures,
                         what="ddpm")


def run(cfg: Config, workdir: Store) -> StageResult:
    from gammaface.pipeline import stage_hash

    connect(cfg.ray)
    out = workdir.sub(layout.stage_dir("train_ddpm", cfg))
    out.makedirs()
    if not out.is_local:
        raise UserError(f"train_ddpm writes its model through a local folder; workdir {workdir.root} "
                        "is remote, which this stage does not support yet.")
    df, image_root = manifest.read(workdir.path(layout.dataset_dir(cfg), manifest.MANIFEST_FILE))
    paths = list(df.loc[df["split"] == "train", "path"])
    if len(paths) < cfg.ddpm.num_workers:
        raise UserError(f"the train split has {len(paths)} images, fewer than ddpm.num_workers.")
    h = stage_hash("train_ddpm", cfg)
    loop_cfg = loop_config(cfg, h, paths, image_root, _cpus_per_worker(cfg))
    n_params = sum(p.numel() for p in UNet2DModel(**loop_cfg["unet"]).parameters())
    tracking.log_params({"ddpm.resolution_used": loop_cfg["unet"]["sample_size"],
                         "ddpm.parameters": n_params})
    final, _ = fit(cfg, loop_cfg, out.path(RAY_TRAIN_DIR), f"ddpm-{h}")
    state = checkpoint.read_state(final, h)
    ema = checkpoint.load_weights(final, checkpoint.EMA_FILE)

    unet = UNet2DModel(**loop_cfg["unet"])
    unet.load_state_dict(ema)
    scheduler = DDPMScheduler(**loop_cfg["scheduler"])
    save_ddpm(Path(out.path()), unet, scheduler)
    device = torch.device("cuda" if cfg.ddpm.use_gpu and torch.cuda.is_available() else "cpu")
    samples = sample_images(loop_cfg["unet"], ema, loop_cfg["scheduler"], FINAL_SAMPLES,
                            cfg.ddpm.sample_steps, cfg.seed, device)
    out.write_bytes(SAMPLES_FILE, png_bytes(sample_sheet(samples)))
    mlflow.log_artifact(out.path(SAMPLES_FILE))
    return StageResult("train_ddpm", rows={"train_images": len(paths), "steps": int(state["step"])},
                       outputs={"unet": out.uri("unet"), "samples": out.uri(SAMPLES_FILE)},
                       metrics={"parameters": float(n_params)})
