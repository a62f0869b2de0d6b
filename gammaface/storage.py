"""Reading and writing under a root that is a local folder or any URI pyarrow opens (s3://, gs://).

Writes of whole files go through a temporary name and a rename where the filesystem has one, so
a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable
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

    def copy_to(self, rel: str, dest: Store, dest_rel: str | None = None) -> None:
        """Copy one file into `dest` (any filesystem), streamed, through a temporary name, so
        the destination never holds half of it."""
        target = dest.path(dest_rel or rel)
        dest.fs.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}{TMP_MARK}{uuid.uuid4().hex[:8]}"
        with self.fs.open_input_stream(self.path(rel)) as src, dest.fs.open_output_stream(tmp) as out:
            shutil.copyfileobj(src, out, 1 << 22)
        dest.fs.move(tmp, target)

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


CACHE_ENV = "GAMMAFACE_CACHE"  # where the local mirrors of remote workdirs live


def mirror_of(remote: Store) -> Store:
    """The local folder that stands in for a remote workdir on this machine: stages read and
    write local files there, and what they finish is copied to the remote one. Keyed by the
    remote URI, so every workdir has its own, and a rerun on this machine finds its own."""
    base = os.environ.get(CACHE_ENV) or os.path.join(Path.home(), ".cache", "gammaface")
    key = hashlib.sha256(remote.uri().encode()).hexdigest()[:16]
    return Store(os.path.join(base, "mirror", key))


def _under(rel: str, folders: tuple[str, ...]) -> bool:
    return any(rel.startswith(f"{f.rstrip('/')}/") for f in folders)


def pull(remote: Store, local: Store, record: dict[str, list[Any]] | None = None,
         skip: Iterable[str] = (), leave: tuple[str, ...] = ()) -> dict[str, str]:
    """Fetch into `local` each file of `remote` that `local` lacks or holds in another size,
    or, where `record` (path -> [size, sha256], a completed stage's) names it, with another
    digest; with a record, only the recorded files; never those in `skip` or under the folders
    in `leave`. Returns path -> sha256 of every fetched or matching file: what `local` and
    `remote` now share."""
    present = local.files()
    shared = {}
    wanted = ({rel: size for rel, (size, _) in record.items()} if record is not None
              else {rel: size for rel, size in remote.files().items() if TMP_MARK not in rel})
    skipped = set(skip)
    for rel, size in wanted.items():
        if rel in skipped or _under(rel, leave):
            continue
        sha = record[rel][1] if record is not None else None
        if present.get(rel) == size and (sha is None or local.sha256(rel) == sha):
            shared[rel] = sha or local.sha256(rel)
            continue
        remote.copy_to(rel, local)
        shared[rel] = local.sha256(rel)
    return shared


def push(local: Store, remote: Store, shared: dict[str, str], last: tuple[str, ...] = (),
         leave: tuple[str, ...] = ()) -> int:
    """Make `remote` hold what `local` holds: upload each file not in `shared` (what both held,
    by digest) or changed since, delete remote files `local` no longer has (but none under the
    folders in `leave`, which something else writes there), and upload the files named in
    `last` after everything else (a completion record). Returns files sent."""
    present = {rel: size for rel, size in local.files().items() if TMP_MARK not in rel}
    there = remote.files()  # one listing, not a request per file
    sent = 0
    for rel in sorted(present, key=lambda r: r in last):
        if there.get(rel) != present[rel] or shared.get(rel) != local.sha256(rel):
            local.copy_to(rel, remote)
            sent += 1
    for rel in there:
        if rel not in present and not _under(rel, leave):
            remote.delete(rel)
    return sent
