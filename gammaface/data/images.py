"""Checking that the images a manifest names exist and decode, before the manifest is written."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from PIL import Image

from gammaface.errors import UserError


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
    """Raise for the first image (in table order) that is missing or broken.

    `where[i]` names the source of row i (a file and line, or an index) for the message.
    """
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        problems = pool.map(lambda p: _problem(root / p, decode), rel_paths, chunksize=64)
        for i, problem in enumerate(problems):
            if problem:
                raise UserError(f"{where[i]}: image {root / rel_paths[i]} {problem}.")
