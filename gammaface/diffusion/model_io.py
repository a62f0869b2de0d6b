"""The trained DDPM on disk as a diffusers pipeline folder: `model_index.json`, `unet/` (config
+ safetensors of the EMA weights) and `scheduler/` (the noise schedule). Plain diffusers loads
it: `DDIMPipeline.from_pretrained(ddpm)` (or `DDPMPipeline`, `DiffusionPipeline`) samples, and
`UNet2DModel.from_pretrained(ddpm/unet)` gives the UNet alone."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from gammaface.common.errors import UserError

UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
PIPELINE_FILES = ("model_index.json", UNET_DIR, SCHEDULER_DIR)  # the pipeline, nothing else


def load_ddpm(folder: str | Path) -> tuple[UNet2DModel, DDPMScheduler]:
    """The EMA UNet and its scheduler; refuses any weight file that is not safetensors."""
    folder = Path(folder)
    if not (folder / UNET_DIR / "config.json").is_file():
        raise UserError(f"{folder} holds no trained DDPM (no {UNET_DIR}/config.json); run train_ddpm.")
    try:
        unet = UNet2DModel.from_pretrained(folder / UNET_DIR, use_safetensors=True,
                                            low_cpu_mem_usage=False)
    except (OSError, EnvironmentError) as exc:
        raise UserError(f"the DDPM in {folder / UNET_DIR} does not load as safetensors: "
                        f"{str(exc).splitlines()[0]}") from None
    return unet.eval(), load_scheduler(folder)


def load_scheduler(folder: str | Path) -> DDPMScheduler:
    return DDPMScheduler.from_pretrained(Path(folder) / SCHEDULER_DIR)


def save_ddpm(folder: Path, unet: UNet2DModel, scheduler: DDPMScheduler) -> None:
    """The UNet and scheduler under `unet/` and `scheduler/`, and the `model_index.json` that
    makes the folder a pipeline (written by diffusers itself, so its format is diffusers')."""
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=True)
