"""User-facing errors: one sentence, exit status 2, no traceback.

`explain` finds the sentence for a failure a user can act on (bad input, a damaged file, a full
or read-only disk, an unreachable store) anywhere in an exception's chain: Ray wraps a task's or
a training worker's exception, sometimes only as the text of its traceback.
"""

from __future__ import annotations

import errno
import re

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user (config, files, data). The message is one complete sentence."""


class Stopped(KeyboardInterrupt):
    """A stop requested by a signal (SIGTERM from a scheduler or a pod's end), unwound like
    Ctrl-C so that runs end as KILLED and locks are freed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


# what to do about an operating-system error, by errno
_ADVICE = {
    errno.ENOSPC: "the disk is full; free space and rerun the same command to resume",
    errno.EDQUOT: "the disk quota is used up; free space and rerun the same command to resume",
    errno.EROFS: "the filesystem is read-only; choose a writable workdir",
    errno.EACCES: "permission denied; choose a workdir you can write to",
    errno.EPERM: "permission denied; choose a workdir you can write to",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EISDIR: "that path is a folder, where a file was expected",
    errno.EEXIST: "that path exists and is not a folder",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ENOENT: "it does not exist",
    errno.EIO: "the device reported an input/output error",
}
# the same failures as other layers word them (SQLite under MLflow, pyarrow's S3 client)
_TEXT = (
    (re.compile(r"database or disk is full|No space left on device", re.I), errno.ENOSPC),
    (re.compile(r"attempt to write a readonly database|Read-only file system", re.I), errno.EROFS),
)
_WRAPPED_USER_ERROR = re.compile(r"(?:gammaface\.[\w.]+\.)?(?:UserError|CheckpointError): (.+)")
_WRAPPED_OS_ERROR = re.compile(r"(\w*Error): \[Errno (\d+)\] ([^:\n]+)(?:: '([^'\n]+)')?")
_REMOTE = re.compile(r"AWS Error|Could not resolve host|Connection refused|curlCode: \d+|"
                     r"Couldn't connect to server")


def _os_sentence(code: int, path: str | None, detail: str = "") -> str:
    advice = _ADVICE.get(code, detail.strip().rstrip(".") or errno.errorcode.get(code, str(code)))
    return f"{path}: {advice}." if path else f"{advice[0].upper()}{advice[1:]}."


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and every exception it carries (causes, contexts, Ray's wrapped causes and worker
    failures), nearest first."""
    seen: set[int] = set()
    order: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        order.append(e)
        wrapped = getattr(e, "cause", None)  # ray.exceptions.RayTaskError
        nested = [wrapped] if isinstance(wrapped, BaseException) else []
        failures = getattr(e, "worker_failures", None)  # Ray Train's worker group error
        if isinstance(failures, dict):
            nested += [x for x in failures.values() if isinstance(x, BaseException)]
        nested += [x for x in (e.__cause__, e.__context__) if x is not None]
        stack = nested + stack
    return order


def explain(exc: BaseException, where: str | None = None) -> str | None:
    """The one sentence for `exc` if it is a failure the user can act on, else None (a bug,
    which keeps its traceback). `where` (e.g. "workdir W") names the place when the failure
    itself names no path, as a disk full under SQLite or inside a Ray worker does not."""
    chain = _chain(exc)
    for e in chain:  # our own sentences first: they name the file or key
        if isinstance(e, UserError) and not hasattr(e, "cause"):
            return str(e)
    for e in chain:
        if isinstance(e, OSError) and e.errno is not None and not hasattr(e, "cause"):
            return _os_sentence(e.errno, e.filename or where, e.strerror or "")
    for e in chain:  # what reached us only as text
        text = str(e)
        m = _WRAPPED_USER_ERROR.search(text)
        if m:
            return m.group(1).strip()
        m = _WRAPPED_OS_ERROR.search(text)
        if m and int(m.group(2)) in _ADVICE:
            return _os_sentence(int(m.group(2)), m.group(4) or where, m.group(3))
        for pattern, code in _TEXT:
            if pattern.search(text):
                return _os_sentence(code, where)
        m = _REMOTE.search(text) if isinstance(e, OSError) else None
        if m:  # pyarrow's object-store clients raise OSError without an errno
            first = text.strip().splitlines()[0].rstrip(".")
            prefix = f"{where}: " if where else ""
            return f"{prefix}the object store is unreachable or refused the request: {first}."
    return None
