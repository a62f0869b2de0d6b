"""Reading and writing under a root that is a local folder or any URI pyarrow opens (s3://, gs://).

A reader never sees half a file: writes go through a temporary name and a rename, or, for files
up to WHOLE_BYTES in an object store, one upload of the whole file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


T = TypeVar("T")
TMP_MARK = ".tmp-"  # in the name of a file or folder still being written
# An object store's upload of bytes held in memory appears whole or not at all and needs no
# folders, so a file up to this size is sent in one request. Larger ones are streamed through a
# temporary name and renamed (in an object store a copy and a delete: two more requests),
# since a stream closed by an error would publish what it had.
WHOLE_BYTES = 4 << 20


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
        """Copy one file into `dest` (any filesystem), so that the destination never holds half
        of it (see `write_bytes`); a file too large to hold goes through a temporary name."""
        source = self.path(rel)
        if not dest.is_local and self.fs.get_file_info(source).size <= WHOLE_BYTES:
            with self.fs.open_input_stream(source) as src:
                dest.write_bytes(dest_rel or rel, src.read())
            return
        with self.fs.open_input_stream(source) as src, dest._temporary(dest_rel or rel) as out:
            shutil.copyfileobj(src, out, 1 << 22)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file: in an object store, up to WHOLE_BYTES in one request, which
        appears whole or not at all; elsewhere under a temporary name and renamed."""
        if not self.is_local and len(data) <= WHOLE_BYTES:
            with self.fs.open_output_stream(self.path(rel)) as out:
                out.write(data)
            return
        with self._temporary(rel) as out:
            out.write(data)

    @contextmanager
    def _temporary(self, rel: str) -> Iterator[pa.NativeFile]:
        """A stream to a temporary name beside `rel`, renamed to `rel` when the block ends."""
        target = self.path(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}{TMP_MARK}{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as out:
            yield out
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
            # 8 MiB a read: each read of an object store's stream is a request of its own (a
            # 45 MB model took 1.5 s to hash from a local S3 server in 1 MiB reads, 0.27 s in 8)
            while chunk := f.read(8 << 20):
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
    listed = ({rel: size for rel, (size, _) in record.items()} if record is not None
              else {rel: size for rel, size in remote.files().items() if TMP_MARK not in rel})
    skipped = set(skip)
    wanted = {rel: size for rel, size in listed.items()
              if rel not in skipped and not _under(rel, leave)}

    def one(rel: str) -> str:
        sha = record[rel][1] if record is not None else None
        if present.get(rel) == wanted[rel]:
            found = local.sha256(rel)
            if sha is None or found == sha:
                return found
        remote.copy_to(rel, local)
        return local.sha256(rel)

    return dict(zip(wanted, _each(one, list(wanted))))


def push(local: Store, remote: Store, shared: dict[str, str], last: tuple[str, ...] = (),
         leave: tuple[str, ...] = ()) -> int:
    """Make `remote` hold what `local` holds: upload each file not in `shared` (what both held,
    by digest) or changed since, delete remote files `local` no longer has (but none under the
    folders in `leave`, which something else writes there), and upload the files named in
    `last` after everything else has landed (a completion record). Returns files sent."""
    present = {rel: size for rel, size in local.files().items() if TMP_MARK not in rel}
    there = remote.files()  # one listing, not a request per file

    def send(rel: str) -> bool:
        if there.get(rel) == present[rel] and shared.get(rel) == local.sha256(rel):
            return False
        local.copy_to(rel, remote)
        return True

    first = [rel for rel in present if rel not in last]
    sent = sum(_each(send, first))
    sent += sum(_each(send, [rel for rel in present if rel in last]))
    _each(remote.delete, [rel for rel in there if rel not in present and not _under(rel, leave)])
    return sent


# Files go to and from an object store this many at a time: each is a request or two of a few
# tens of milliseconds that wait on the network, not the CPU (a stage of 800 small files took
# 34 s one at a time against a server on loopback; benchmarks/storage_transfer.py)
TRANSFERS = 16


def _each(fn: Callable[[str], T], rels: list[str]) -> list[T]:
    """`fn(rel)` for every path, TRANSFERS at a time, results in the order given; on the first
    error nothing more starts, and it is raised once the transfers under way have ended."""
    if len(rels) <= 1:
        return [fn(rel) for rel in rels]
    with ThreadPoolExecutor(min(TRANSFERS, len(rels))) as pool:
        futures = [pool.submit(fn, rel) for rel in rels]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()  # what has not started never starts
            raise
