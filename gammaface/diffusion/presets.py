"""UNet2DModel architectures by resolution.

`tiny` is for tests (8 px); `small` is the CPU demo (16-24 px); `32`, `64` and `128` are GPU
presets with block sizes after diffusers' unconditional training example.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        resolution=8, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D")),
    # No attention: at 16 px it cost 40 % of the CPU throughput for no visible gain.
    "small": dict(
        resolution=16, layers_per_block=1, block_out_channels=(32, 64, 64), norm_num_groups=16,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D")),
    "32": dict(
        resolution=32, layers_per_block=2, block_out_channels=(64, 128, 128, 256),
        norm_num_groups=32,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "64": dict(
        resolution=64, layers_per_block=2, block_out_channels=(128, 128, 256, 256, 512, 512),
        norm_num_groups=32,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D",
                          "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D",
                        "UpBlock2D")),
}
PRESETS["128"] = {**PRESETS["64"], "resolution": 128}


def unet_config(preset: str, resolution: int | None = None) -> dict[str, Any]:
    """Keyword arguments of `UNet2DModel` for a preset at a resolution (default: the preset's)."""
    spec = dict(PRESETS[preset])
    default = spec.pop("resolution")
    size = resolution or default
    factor = 2 ** (len(spec["block_out_channels"]) - 1)
    if size % factor:
        raise ValueError(f"preset {preset!r} needs a resolution divisible by {factor}, got {size}.")
    return dict(sample_size=size, in_channels=3, out_channels=3, **spec)


def default_resolution(preset: str) -> int:
    return int(PRESETS[preset]["resolution"])
