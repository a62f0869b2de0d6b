"""The on-disk layout of harvested latents: float32 `.npy` shards of flattened rows plus an
`index.parquet` mapping each row to its shard and offset, its seed and (forward) source image."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from gammaface.errors import UserError
from gammaface.storage import Store

SHARD_DIR = "shards"
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
INDEX_COLUMNS = ("row", "shard", "offset", "seed", "source_path")


def shard_name(first_row: int) -> str:
    return f"{SHARD_DIR}/shard-{first_row:09d}.npy"


def write_shard(out: Store, first_row: int, rows: np.ndarray) -> str:
    name = shard_name(first_row)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)
    out.write_bytes(name, buf.getvalue())
    return name


def read_index(folder: Store) -> pd.DataFrame:
    df, _ = folder.read_parquet(INDEX_FILE)
    return df.sort_values("row").reset_index(drop=True)


def load_rows(folder: Store, index: pd.DataFrame | None = None) -> np.ndarray:
    """All latents (N x d float32) in row order, read shard by shard."""
    index = read_index(folder) if index is None else index
    if index.empty:
        return np.zeros((0, 0), np.float32)
    parts = []
    for shard, group in index.groupby("shard", sort=False):
        try:
            data = np.load(io.BytesIO(folder.read_bytes(str(shard))), allow_pickle=False)
            picked = data[group["offset"].to_numpy()]
        except (ValueError, EOFError, IndexError) as exc:  # what numpy raises for a cut file
            raise UserError(f"latents shard {folder.uri(str(shard))} is damaged ({exc}); "
                            "rerun harvest to write it again.") from None
        parts.append((group["row"].to_numpy(), picked))
    rows = np.concatenate([r for r, _ in parts])
    data = np.concatenate([d for _, d in parts])
    return data[np.argsort(rows)]

