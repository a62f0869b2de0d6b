"""Loading manifest images into memory as uint8 arrays at the model's resolution."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from gammaface.errors import UserError


def load_resized(root: str, paths: Sequence[str], size: int, workers: int = 4) -> np.ndarray:
    """(N, size, size, 3) uint8; images of another size are resized with a box filter."""

    def one(rel: str) -> np.ndarray:
        path = Path(root) / rel
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BOX if im.width > size else Image.BICUBIC)
                return np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise UserError(f"image {path} is missing; it was there when its manifest was "
                            "written.") from None
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "broken file"
            raise UserError(f"image {path} does not decode ({exc}); restore it, or rerun the "
                            "stage that wrote it.") from None

    if not paths:
        return np.zeros((0, size, size, 3), np.uint8)
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(one, paths)))


def to_model_space(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC in [0, 255] -> float NCHW in [-1, 1]."""
    x = torch.as_tensor(batch)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC."""
    y = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).numpy()
