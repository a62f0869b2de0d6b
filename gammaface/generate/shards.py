"""Shard folders: written under a temporary name and renamed into place only when whole, so a
folder named `shard-XXXXX` is either complete or is checked, found wanting, and redone.

`shard.json` records the shard's plan entry (with the method's config hash) and every file with
its size, seed and sha256; a folder whose record differs from the plan, or whose files are
missing or differ from their record, is not counted (and is redone).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gammaface.generate.plan import Shard, image_seed
from gammaface.images import encode_png, grid, load_rgb
from gammaface.storage import TMP_MARK

SHARD_FILE = "shard.json"
TMP_PREFIX = TMP_MARK
MANIFEST_COLUMNS = ("path", "method", "component", "shard", "seed")


def write(method_dir: Path, shard: Shard, images: np.ndarray, method_key: str) -> None:
    """Write a shard's images and record, then rename the folder into place."""
    final = method_dir / shard.name
    tmp = method_dir / f"{TMP_PREFIX}{shard.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    files = []
    for i, image in enumerate(images):
        name = f"{i:05d}.png"
        data = encode_png(image)
        (tmp / name).write_bytes(data)
        files.append([name, len(data), image_seed(shard.seed, i), hashlib.sha256(data).hexdigest()])
    record = {"plan": {**shard.record(), "method_key": method_key}, "files": files}
    (tmp / SHARD_FILE).write_text(json.dumps(record))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def is_complete(method_dir: Path, shard: Shard, method_key: str) -> bool:
    folder = method_dir / shard.name
    try:
        record = json.loads((folder / SHARD_FILE).read_text())
    except (OSError, ValueError):
        return False
    if record.get("plan") != {**shard.record(), "method_key": method_key}:
        return False
    files = record.get("files", [])
    if len(files) != shard.count:
        return False
    for entry in files:
        if not (isinstance(entry, list) and len(entry) == 4):
            return False  # a record without digests cannot vouch for its files
        name, size, _, sha = entry
        try:
            data = (folder / name).read_bytes()  # one read for both checks
        except OSError:
            return False
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            return False
    return True


def sweep(method_dir: Path, plan: list[Shard], method_key: str) -> list[Shard]:
    """Remove temporary folders, stale and incomplete shards; return the shards still to do."""
    method_dir.mkdir(parents=True, exist_ok=True)
    planned = {s.name for s in plan}
    for entry in method_dir.iterdir():
        if entry.is_dir() and (entry.name.startswith(TMP_PREFIX)
                               or (entry.name.startswith("shard-") and entry.name not in planned)):
            shutil.rmtree(entry)
    pending = []
    for shard in plan:
        if not is_complete(method_dir, shard, method_key):
            if (method_dir / shard.name).exists():
                shutil.rmtree(method_dir / shard.name)
            pending.append(shard)
    return pending


def manifest_rows(method_dir: Path, plan: list[Shard]) -> pd.DataFrame:
    """The method's manifest, rebuilt from the shard records (paths relative to method_dir)."""
    parts: dict[str, list[Any]] = {c: [] for c in MANIFEST_COLUMNS}
    for shard in plan:
        record = json.loads((method_dir / shard.name / SHARD_FILE).read_text())
        for name, _, seed, _ in record["files"]:
            parts["path"].append(f"{shard.name}/{name}")
            parts["method"].append(shard.method)
            parts["component"].append(shard.component)
            parts["shard"].append(shard.shard)
            parts["seed"].append(int(seed))
    return pd.DataFrame(parts)


def first_images(method_dir: Path, shard: Shard, n: int) -> list[np.ndarray]:
    return [load_rgb(method_dir / shard.name / f"{i:05d}.png") for i in range(min(n, shard.count))]


def component_grid(method_dir: Path, plan: list[Shard], per_row: int) -> np.ndarray:
    """One row per component (or cell): the first images of its first shard."""
    firsts: dict[int, Shard] = {}
    for s in plan:
        firsts.setdefault(s.component, s)
    rows = []
    for comp in sorted(firsts):
        images = first_images(method_dir, firsts[comp], per_row)
        blank = np.zeros_like(images[0])
        rows += images + [blank] * (per_row - len(images))
    return grid(rows, ncol=per_row, upscale=max(1, 48 // rows[0].shape[0]))
