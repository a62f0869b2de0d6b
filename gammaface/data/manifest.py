"""The canonical manifest: one table that every dataset loader writes and every consumer reads.

Columns: `path`, `split`, one column per registry attribute (class name, or null where unknown);
loaders may add columns of their own (FairFace's `service_test`). Where the images live is stored
in the Parquet metadata as `image_root`: relative to the manifest's folder, or absolute when the
images stay where the user keeps them.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import pandas as pd
from typing import Sequence

from gammaface.data import registry
from gammaface.common.errors import UserError
from gammaface.storage.store import Store

MANIFEST_FILE = "manifest.parquet"
IMAGE_ROOT_KEY = "image_root"


def validate(df: pd.DataFrame, source: str = "manifest") -> None:
    """Refuse a table that is not a canonical manifest, naming the first offending row."""
    for col in registry.MANIFEST_COLUMNS:
        if col not in df.columns:
            raise UserError(f"{source}: column {col!r} is missing.")
    if df["path"].isna().any():
        raise UserError(f"{source}: row {int(df['path'].isna().to_numpy().argmax())} has no path.")
    _check_values(df, "split", registry.SPLITS, source, allow_null=False)
    for name in registry.ATTRIBUTE_NAMES:
        _check_values(df, name, registry.get(name).classes, source, allow_null=True)
    dup = df["path"].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise UserError(f"{source}: path {df['path'].iloc[row]!r} appears twice (row {row}).")


def _check_values(df: pd.DataFrame, col: str, allowed: tuple[str, ...], source: str,
                  allow_null: bool) -> None:
    values = df[col]
    bad = ~values.isin(allowed)
    if allow_null:
        bad &= values.notna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise UserError(f"{source}: row {row} has {col} = {values.iloc[row]!r}; "
                        f"expected one of {', '.join(allowed)}{' or null' if allow_null else ''}.")


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes (strings with nulls as None)."""
    extra = [c for c in df.columns if c not in registry.MANIFEST_COLUMNS]
    out = df[list(registry.MANIFEST_COLUMNS) + extra].copy()
    for col in registry.MANIFEST_COLUMNS:
        out[col] = out[col].astype("string")
    return out.reset_index(drop=True)


def write(df: pd.DataFrame, out: Store, image_root: str) -> pd.DataFrame:
    """Validate, then write `manifest.parquet` in one piece (nothing is written on bad input)."""
    df = normalise(df)
    validate(df, source=out.uri(MANIFEST_FILE))
    out.write_parquet(MANIFEST_FILE, df, metadata={IMAGE_ROOT_KEY: image_root})
    return df


def read(manifest: str | Path) -> tuple[pd.DataFrame, str]:
    """The table and the absolute image root of a manifest file (path or URI)."""
    manifest = str(manifest)
    folder, name = posixpath.split(manifest.rstrip("/"))
    store = Store(folder)
    if not store.exists(name):
        raise UserError(f"manifest {manifest} does not exist.")
    df, meta = store.read_parquet(name)
    validate(df, source=manifest)
    root = meta.get(IMAGE_ROOT_KEY, ".")
    if not (root.startswith("/") or "://" in root):
        root = store.uri(root) if root != "." else store.uri()
    return normalise(df), root


def summary(df: pd.DataFrame) -> str:
    """Rows per split, counts per class and nulls per attribute, as printable text."""
    lines = [f"{len(df)} rows: " + ", ".join(
        f"{s} {int((df['split'] == s).sum())}" for s in registry.SPLITS)]
    width = max(len(n) for n in registry.ATTRIBUTE_NAMES)
    for name in registry.ATTRIBUTE_NAMES:
        counts = df[name].value_counts(dropna=True)
        parts = [f"{c} {int(counts.get(c, 0))}" for c in registry.get(name).classes]
        nulls = int(df[name].isna().sum())
        lines.append(f"  {name:<{width}}  " + ", ".join(parts) + f", null {nulls}")
    return "\n".join(lines)


def image_root_for(out_dir: Path, images: Path) -> str:
    """Relative root when the images sit under the manifest's folder, else absolute."""
    images, out_dir = images.resolve(), out_dir.resolve()
    try:
        rel = images.relative_to(out_dir)
        return str(rel) if str(rel) != "." else "."
    except ValueError:
        return str(images)


def labels_at(df: pd.DataFrame, paths: Sequence[str]) -> pd.DataFrame:
    """The manifest rows of `paths`, in that order (a path may repeat): the labels of the
    images that latents were harvested from."""
    return df.set_index("path").loc[list(paths)].reset_index(drop=True)
