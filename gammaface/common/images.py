"""Images in memory and on disk: loading manifest images at a model's resolution, converting
between uint8 NHWC and the models' float NCHW, the one PNG encoder, and sample grids.

torch is imported where it is used: the dataset loaders check images through this module, and
a stage that only reads and writes PNGs (prepare) should not wait seconds for torch to load."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from gammaface.common.errors import UserError

if TYPE_CHECKING:
    import torch

WHITE = 255


def load_resized(root: str, paths: Sequence[str], size: int, workers: int = 4) -> np.ndarray:
    """(N, size, size, 3) uint8; images of another size are resized with a box filter."""

    def one(rel: str) -> np.ndarray:
        path = Path(root) / rel
        try:
            with Image.open(path) as src:
                im = src.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BOX if im.width > size
                                   else Image.Resampling.BICUBIC)
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


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _problem(path: Path, decode: bool) -> str | None:
    if not path.is_file():
        return "is missing"
    if decode:
        try:
            with Image.open(path) as im:
                im.load()
        except Exception:  # PIL raises many types for a broken file; all mean the same here
            return "does not decode as an image"
    return None


def check_images(root: Path, rel_paths: Sequence[str], where: Sequence[str], decode: bool = True,
                 workers: int | None = None) -> None:
    """Raise for the first image (in table order) that is missing or broken, before a manifest
    naming it is written. `where[i]` names the source of row i (a file and line, or an index)."""
    from gammaface.common.progress import progress

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    # 70,000 FFHQ files take minutes to decode: show it, but not for a handful
    with ThreadPoolExecutor(workers) as pool, progress(
            len(rel_paths), "images checked", unit="img", disable=len(rel_paths) < 5000) as bar:
        problems = pool.map(lambda p: _problem(root / p, decode), rel_paths, chunksize=64)
        for i, problem in enumerate(problems):
            if problem:
                raise UserError(f"{where[i]}: image {root / rel_paths[i]} {problem}.")
            bar.update(1)


def to_model_space(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC in [0, 255] -> float NCHW in [-1, 1]."""
    import torch

    x = torch.as_tensor(batch)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC."""
    import torch

    y = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).numpy()


def encode_png(image: np.ndarray) -> bytes:
    """HxWx3 uint8 as PNG bytes (Pillow's default compression): every PNG the package writes,
    so equal pixels always give equal bytes and equal recorded digests."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def grid(images: Sequence[np.ndarray], ncol: int, pad: int = 1, upscale: int = 1) -> np.ndarray:
    """Tile equally sized HxWx3 uint8 images row by row, `pad` white pixels between and around,
    each pixel repeated `upscale` times so small faces stay visible."""
    import torch
    from torchvision.utils import make_grid

    if not len(images):
        raise ValueError("grid needs at least one image")
    batch = torch.as_tensor(np.stack(list(images))).permute(0, 3, 1, 2)
    if len(batch) == 1:  # make_grid returns a lone image without its border
        batch = torch.cat([batch, torch.full_like(batch, WHITE)])
        sheet = make_grid(batch, nrow=2, padding=pad, pad_value=WHITE)
        sheet = sheet[:, :, :pad + batch.shape[3] + pad]
    else:
        sheet = make_grid(batch, nrow=ncol, padding=pad, pad_value=WHITE)
    sheet = sheet.permute(1, 2, 0).numpy()
    if upscale > 1:
        sheet = sheet.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return np.ascontiguousarray(sheet)


def square_grid(images: np.ndarray, face_px: int = 64) -> np.ndarray:
    """A square sheet of samples, each upscaled to about `face_px` pixels."""
    side = int(np.ceil(np.sqrt(len(images))))
    return grid(list(images), ncol=side, upscale=max(1, face_px // images.shape[1]))
