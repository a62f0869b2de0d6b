"""Reading and writing under a root that is a local folder or any URI pyarrow opens (s3://, gs://).

Writes of whole files go through a temporary name and a rename where the filesystem has one, so
a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


TMP_MARK = ".tmp-"  # in the name of a file or folder still being written


def _is_uri(root: str) -> bool:
    return "://" in root


class Store:
    """A folder on some filesystem; paths given to methods are relative to it."""

    def __init__(self, root: str | Path) -> None:
        root = str(root)
        if _is_uri(root):
            self.fs, self.base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.root = root if _is_uri(root) else self.base

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if parts else self.base

    def uri(self, *parts: str) -> str:
        """A string that reopens the same place with `Store(...)`, also from another process."""
        if self.is_local:
            return self.path(*parts)
        return posixpath.join(self.root, *parts)

    def sub(self, *parts: str) -> Store:
        return Store(self.uri(*parts))

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel) if rel else self.base, recursive=True)

    def delete(self, rel: str) -> None:
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}{TMP_MARK}{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)

    def files(self) -> dict[str, int]:
        """Every file under this folder: path relative to it -> size in bytes."""
        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        prefix = self.base.rstrip("/") + "/"
        return {info.path[len(prefix):]: info.size for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File}

    def sha256(self, rel: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(rel)) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def write_parquet(self, rel: str, df: pd.DataFrame, metadata: dict[str, str] | None = None) -> None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   **{k.encode(): v.encode() for k, v in metadata.items()}})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str) -> tuple[pd.DataFrame, dict[str, str]]:
        table = pq.read_table(self.path(rel), filesystem=self.fs)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
                if not k.startswith(b"pandas")}
        return table.to_pandas(), meta
