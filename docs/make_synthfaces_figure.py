"""Regenerate docs/synthfaces_{64,16}px.png: the first 32 faces of the default spec, seed 0.

    python docs/make_synthfaces_figure.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gammaface.data import synthfaces
from gammaface.common.images import encode_png, grid

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = synthfaces.sample_labels(32, seed=0).to_dict("records")
    for size, upscale in ((64, 1), (16, 4)):
        faces = [np.asarray(Image.open(io.BytesIO(synthfaces.render_row(r, size, 0, i))))
                 for i, r in enumerate(rows)]
        (HERE / f"synthfaces_{size}px.png").write_bytes(encode_png(grid(faces, ncol=16, pad=2, upscale=upscale)))


if __name__ == "__main__":
    main()
