"""The trained DDPM on disk, in diffusers' own layout: `unet/` (config + safetensors of the EMA
weights) and `scheduler/` (the noise schedule). `UNet2DModel.from_pretrained(ddpm/unet)` loads
it in plain diffusers."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMScheduler, UNet2DModel

from gammaface.errors import UserError

UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"


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
    unet.save_pretrained(folder / UNET_DIR, safe_serialization=True)
    scheduler.save_pretrained(folder / SCHEDULER_DIR)
