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
from gammaface.common.images import encode_png, grid, load_rgb
from gammaface.storage.store import TMP_MARK, Store

SHARD_FILE = "shard.json"
TMP_PREFIX = TMP_MARK
MANIFEST_COLUMNS = ("path", "method", "component", "shard", "seed")


def write(method_dir: Path, shard: Shard, images: np.ndarray, method_key: str,
          renders: list[list[int]] | None = None) -> None:
    """Write a shard's images and record, then rename the folder into place. A quota shard
    passes `renders` ([cell, confident, written] per render) and writes only the images marked
    written, under their render index."""
    final = method_dir / shard.name
    tmp = method_dir / f"{TMP_PREFIX}{shard.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    files = []
    for i, image in enumerate(images):
        if renders is not None and not renders[i][2]:
            continue
        name = f"{i:05d}.png"
        data = encode_png(image)
        (tmp / name).write_bytes(data)
        files.append([name, len(data), image_seed(shard.seed, i), hashlib.sha256(data).hexdigest()])
    record: dict[str, Any] = {"plan": {**shard.record(), "method_key": method_key}, "files": files}
    if renders is not None:
        record["renders"] = renders
    (tmp / SHARD_FILE).write_text(json.dumps(record))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def publish(method_dir: Path, shard: Shard, remote: Store) -> None:
    """Upload a written shard folder to `remote` (the method's folder of a remote workdir),
    its record last: a remote shard without its record is incomplete and rendered again."""
    local = Store(method_dir / shard.name)
    target = remote.sub(shard.name)
    for rel in sorted(local.files(), key=lambda r: r == SHARD_FILE):
        local.copy_to(rel, target)


def is_complete(method_dir: Path, shard: Shard, method_key: str) -> bool:
    folder = method_dir / shard.name
    try:
        record = json.loads((folder / SHARD_FILE).read_text())
    except (OSError, ValueError):
        return False
    if record.get("plan") != {**shard.record(), "method_key": method_key}:
        return False
    files = record.get("files", [])
    expected = shard.count
    if shard.open_cells:  # a quota shard holds the renders it marked written
        marks = record.get("renders")
        if not isinstance(marks, list) or len(marks) != shard.count:
            return False
        expected = sum(1 for m in marks if isinstance(m, list) and len(m) == 3 and m[2])
    if len(files) != expected:
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


def prune(method_dir: Path, keep: set[str] | None) -> None:
    """Remove temporary folders and (when `keep` is given) shard folders not named in it."""
    method_dir.mkdir(parents=True, exist_ok=True)
    for entry in method_dir.iterdir():
        if entry.is_dir() and (entry.name.startswith(TMP_PREFIX)
                               or (keep is not None and entry.name.startswith("shard-")
                                   and entry.name not in keep)):
            shutil.rmtree(entry)


def incomplete(method_dir: Path, shards: list[Shard], method_key: str) -> list[Shard]:
    """The shards not yet complete, their broken folders removed."""
    pending = []
    for shard in shards:
        if not is_complete(method_dir, shard, method_key):
            if (method_dir / shard.name).exists():
                shutil.rmtree(method_dir / shard.name)
            pending.append(shard)
    return pending


def sweep(method_dir: Path, plan: list[Shard], method_key: str) -> list[Shard]:
    """Remove temporary folders, stale and incomplete shards; return the shards still to do."""
    prune(method_dir, {s.name for s in plan})
    return incomplete(method_dir, plan, method_key)


def render_marks(method_dir: Path, shard: Shard) -> np.ndarray:
    """A quota shard's marks per render, from its record: [cell, confident, written] and, in
    records that count them, [UNet evaluations, labeller evaluations]."""
    marks = read_record(method_dir, shard)["renders"]
    width = min((len(m) for m in marks), default=3)
    return np.array([[int(v) for v in m[:width]] for m in marks], dtype=np.int64).reshape(-1, width)


def read_record(method_dir: Path, shard: Shard) -> dict[str, Any]:
    return json.loads((method_dir / shard.name / SHARD_FILE).read_text())


def manifest_rows(method_dir: Path, plan: list[Shard],
                  keep: dict[int, np.ndarray] | None = None) -> pd.DataFrame:
    """The method's manifest, rebuilt from the shard records (paths relative to method_dir);
    `keep` (quota sets) names the render indices kept per shard id."""
    parts: dict[str, list[Any]] = {c: [] for c in MANIFEST_COLUMNS}
    for shard in plan:
        files = read_record(method_dir, shard)["files"]
        if keep is not None:
            wanted = {f"{int(i):05d}.png" for i in keep.get(shard.shard, [])}
            files = [f for f in files if f[0] in wanted]
        for name, _, seed, _ in files:
            parts["path"].append(f"{shard.name}/{name}")
            parts["method"].append(shard.method)
            parts["component"].append(shard.component)
            parts["shard"].append(shard.shard)
            parts["seed"].append(int(seed))
    # explicit types: a quota set that kept nothing still has string paths and integer columns
    return pd.DataFrame(parts).astype({"path": object, "method": object, "component": "int64",
                                       "shard": "int64", "seed": "int64"})


def first_images(method_dir: Path, shard: Shard, n: int) -> list[np.ndarray]:
    names = [f[0] for f in read_record(method_dir, shard)["files"]][:n]
    return [load_rgb(method_dir / shard.name / name) for name in names]


def component_grid(method_dir: Path, plan: list[Shard], per_row: int) -> np.ndarray:
    """One row per component (or cell): its first images, in plan order."""
    rows_of: dict[int, list[np.ndarray]] = {}
    for s in plan:
        have = rows_of.setdefault(s.component, [])
        if len(have) < per_row:
            have += first_images(method_dir, s, per_row - len(have))
    found = [im for comp in sorted(rows_of) for im in rows_of[comp]]
    if not found:
        return np.zeros((8, 8 * per_row, 3), np.uint8)
    blank = np.zeros_like(found[0])
    rows: list[np.ndarray] = []
    for comp in sorted(rows_of):
        images = rows_of[comp] or [blank]
        rows += images + [blank] * (per_row - len(images))
    return grid(rows, ncol=per_row, upscale=max(1, 48 // rows[0].shape[0]))
