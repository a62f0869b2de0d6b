"""Copies between a local folder and an S3-compatible server (moto on loopback, the one the test
suite starts): a stage-sized folder of small files pushed to the bucket and pulled back onto an
empty mirror, one file at a time and `storage.TRANSFERS` at a time, in the same run.

    .venv/bin/python benchmarks/storage_transfer.py [--files 800] [--kib 2]

A stage's folder is mostly small files (generated images of a few KiB, shard records), so a
copy's time is requests waiting on the server, which threads overlap. Against a real object
store far away each request waits longer, and the ratio grows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gammaface.storage import store as storage  # noqa: E402
from gammaface.storage.store import Store, pull, push  # noqa: E402
from tests.deploy.servers import s3_server  # noqa: E402


def _folder(root: Path, files: int, kib: int) -> Store:
    for i in range(files):
        path = root / f"shard-{i // 100:03d}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(kib * 1024))
    return Store(root)


def _timed(transfers: int, local: Store, bucket: str, mirror: Path) -> tuple[float, float]:
    storage.TRANSFERS = transfers
    remote = Store(f"{bucket}/t{transfers}")
    start = time.perf_counter()
    sent = push(local, remote, {})
    pushed = time.perf_counter() - start
    start = time.perf_counter()
    fetched = pull(remote, Store(mirror))
    pulled = time.perf_counter() - start
    assert sent == len(fetched) == len(local.files())
    return pushed, pulled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=800)
    parser.add_argument("--kib", type=int, default=2)
    args = parser.parse_args()
    parallel = storage.TRANSFERS
    with tempfile.TemporaryDirectory() as tmp, s3_server(Path(tmp)) as server:
        os.environ.update(server.env)  # pyarrow's S3 filesystem reads the endpoint from here
        bucket = server.bucket("bench")
        local = _folder(Path(tmp) / "local", args.files, args.kib)
        print(f"{args.files} files of {args.kib} KiB, S3 server on loopback")
        times = {}
        for transfers in (1, parallel):
            times[transfers] = _timed(transfers, local, bucket, Path(tmp) / f"mirror-{transfers}")
            push_s, pull_s = times[transfers]
            print(f"  {transfers:2d} at a time: push {push_s:6.1f} s ({args.files / push_s:6.0f} files/s), "
                  f"pull {pull_s:6.1f} s ({args.files / pull_s:6.0f} files/s)")
        (push1, pull1), (pushn, pulln) = times[1], times[parallel]
        print(f"  ratio {parallel} at a time vs 1: push {push1 / pushn:.1f}x faster, "
              f"pull {pull1 / pulln:.1f}x faster")


if __name__ == "__main__":
    main()
