"""The on-disk layout of harvested latents: float32 `.npy` shards of flattened rows plus an
`index.parquet` mapping each row to its shard and offset, its seed and (forward) source image."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from gammaface.common.errors import UserError
from gammaface.storage.store import Store

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
    """All latents (N x d float32) in row order, read shard by shard into one array: beyond
    the result, one shard at a time is held (at N = 20,000, d = 3,072 the result is 235 MB)."""
    index = read_index(folder) if index is None else index
    if index.empty:
        return np.zeros((0, 0), np.float32)
    # where each index entry lands in the result: its rank by row
    position = np.empty(len(index), dtype=np.int64)
    position[np.argsort(index["row"].to_numpy(), kind="stable")] = np.arange(len(index))
    out: np.ndarray | None = None
    for shard, entries in index.groupby("shard", sort=False).indices.items():
        try:
            data = np.load(io.BytesIO(folder.read_bytes(str(shard))), allow_pickle=False)
            if out is None:
                out = np.empty((len(index), data.shape[1]), dtype=np.float32)
            out[position[entries]] = data[index["offset"].to_numpy()[entries]]
        except (ValueError, EOFError, IndexError) as exc:  # what numpy raises for a cut file
            raise UserError(f"latents shard {folder.uri(str(shard))} is damaged ({exc}); "
                            "rerun harvest to write it again.") from None
    assert out is not None
    return out
