"""Image grids for sample sheets, README figures and MLflow artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def grid(images: Sequence[np.ndarray], ncol: int, pad: int = 1, upscale: int = 1) -> np.ndarray:
    """Tile equally sized HxWx3 uint8 images row by row, with `pad` pixels of white between."""
    if not images:
        raise ValueError("grid needs at least one image")
    h, w = images[0].shape[:2]
    nrow = -(-len(images) // ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = img
    if upscale > 1:
        out = out.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return out


def save_png(array: np.ndarray, path: str | Path) -> None:
    Image.fromarray(array).save(path)


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pyplot():
    """matplotlib.pyplot on the Agg backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout); the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
