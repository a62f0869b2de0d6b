"""One run at a time per workdir: a file lock held for the whole run.

Two runs on one workdir would sweep each other's temporary shard folders and job folders, so
the second stops at once with one sentence naming the holder. The lock is an OS file lock
(`filelock`), released by the kernel when its process dies, so a killed run never leaves a
stale lock; beside it a small JSON file says who holds it, for that sentence.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from gammaface.common.errors import UserError
from gammaface.storage.store import Store

LOCK_FILE = ".gammaface.lock"
HOLDER_FILE = ".gammaface.lock.json"


def holder(workdir: Store) -> dict | None:
    """Who holds (or last held) the workdir's lock, as written by `hold`."""
    try:
        with open(workdir.path(HOLDER_FILE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


@contextmanager
def hold(workdir: Store, what: str = "run") -> Iterator[None]:
    """Hold the workdir's lock for the block; a second holder gets a UserError at once.

    An object-store workdir has no file lock to take; it is not locked (one writer per
    prefix is then the user's to keep)."""
    if not workdir.is_local:
        yield
        return
    os.makedirs(workdir.path(), exist_ok=True)
    lock = FileLock(workdir.path(LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        h = holder(workdir) or {}
        who = (f"pid {h.get('pid', '?')} on host {h.get('host', '?')}, running "
               f"{h.get('what', 'a run')} since {h.get('since', '?')}") if h else "another process"
        raise UserError(f"workdir {workdir.root} is in use by {who}; wait for it to finish or "
                        "give this run another workdir.") from None
    try:
        with open(workdir.path(HOLDER_FILE), "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                       "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "argv": sys.argv}, fh)
        yield
    finally:
        lock.release()
