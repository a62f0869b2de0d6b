"""What every stage shares: what the pipeline hands it (`StageContext`), what it hands back
(`StageResult`), its `stage.json`, and the rule for skipping it.

A folder whose `stage.json` carries the current config hash is complete and skipped; a folder
without it (or with another hash) is incomplete and redone, never trusted. `stage.json` also
records every file of the folder with its size and sha256, so a file damaged after the stage
completed is found before anything reads it.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable

from gammaface.run import layout
from gammaface.config import Config
from gammaface.data.manifest import MANIFEST_FILE
from gammaface.common.errors import UserError
from gammaface.run.layout import STAGE_FILE
from gammaface.storage.store import TMP_MARK, Store, mirror_of, pull

if TYPE_CHECKING:  # a type only: the stage context loads no generation code
    from gammaface.generate.methods import Input

_VERSIONED = ("gammaface", "torch", "torchvision", "ray", "diffusers", "mlflow", "numpy", "pandas",
              "pyarrow", "scikit-learn")


@dataclass
class StageResult:
    stage: str
    rows: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0


def say(line: str) -> None:
    """A stage's progress line, flushed at once: logs of a long stage are read as it runs."""
    print(line, flush=True)


@dataclass
class StageContext:
    """Everything a stage's `run(ctx)` needs: the config, the workdir, its own config hash and
    the hash of any stage (the pipeline's, so no stage recomputes it), and where each stage's
    folder is (`folders`: relative to the workdir, or absolute; `gammaface gmm sweep` moves
    harvest's and gmm_search's beside the pipeline's own). `makers`: the stage that makes each
    input of a library's resume key. Both come from the stages' declarations (gammaface.stages),
    which this layer below them does not read itself."""

    cfg: Config
    workdir: Store
    stage: str
    hash_of: Callable[[str], str]
    echo: Callable[[str], None] = say
    folders: dict[str, str] = field(default_factory=dict)
    makers: dict[Input, str] = field(default_factory=dict)
    # Where the workdir is remote, `workdir` is its local mirror and `publish` this stage's
    # remote folder: a stage whose actors finish units (shards) uploads each one there as it
    # completes, so a run killed anywhere resumes from them, on this machine or another.
    publish: Store | None = None

    @property
    def hash(self) -> str:
        return self.hash_of(self.stage)

    def input_hash(self, what: Input) -> str:
        """The config hash of the stage that makes `what`."""
        return self.hash_of(self.makers[what])

    def folder(self, stage: str | None = None) -> Store:
        """The folder of `stage` (default: this stage's own, the only one it writes)."""
        where = self.folders[stage or self.stage]
        return Store(where) if os.path.isabs(where) else self.workdir.sub(where)

    @property
    def out(self) -> Store:
        return self.folder()

    def local_out(self, why: str) -> Store:
        """This stage's folder, refused with one sentence where the workdir is remote and the
        stage writes through local files."""
        if not self.out.is_local:
            raise UserError(f"{self.stage} {why}; workdir {self.workdir.root} is remote: run it "
                            "with `gammaface run`, which stages a remote workdir through a local "
                            "mirror.")
        return self.out

    def checkpoints(self) -> str:
        """Where Ray Train keeps this stage's checkpoints: for a remote workdir the bucket (a
        killed run resumes from them on any machine, and workers on any node write them there),
        else the stage's own folder."""
        if self.publish is not None:
            return self.publish.uri(layout.RAY_TRAIN_DIR)
        return self.out.path(layout.RAY_TRAIN_DIR)

    @property
    def manifest_path(self) -> str:
        """The dataset's manifest (prepare's output), as a local path."""
        return self.folder("prepare").path(MANIFEST_FILE)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def completed_hash(folder: Store) -> str | None:
    """The config hash recorded by a finished stage in `folder`, or None."""
    if not folder.exists(STAGE_FILE):
        return None
    try:
        return folder.read_json(STAGE_FILE).get("config_hash")
    except (ValueError, AttributeError):
        return None  # an unreadable stage.json means the stage never finished


def _recorded(rel: str) -> bool:
    """Files a stage's record covers: all but the record itself, half-written temporaries and
    Ray Train's checkpoints. The checkpoints are only where a stopped training resumes from (and
    are checked then, against the config, as they load); the stage's outputs are the model files
    written beside them. Recorded, they were hashed again on every later run, about 270 MB per
    ResNet-18 stage (two checkpoints with the optimiser's state), and in an object store, where
    Ray Train writes them itself, they were never in the record: a local and a remote workdir now
    record the same files."""
    return rel != STAGE_FILE and TMP_MARK not in rel \
        and not rel.startswith(layout.RAY_TRAIN_DIR + "/")


def digests(folder: Store) -> dict[str, list[Any]]:
    """path -> [size, sha256] of every file the stage left in its folder."""
    return {rel: [size, folder.sha256(rel)] for rel, size in sorted(folder.files().items())
            if _recorded(rel)}


def damaged(folder: Store) -> list[tuple[str, str]]:
    """The recorded files of a completed stage that are now missing or differ from their record,
    as (path, what changed); empty for a sound folder, or a record older than file digests."""
    try:
        recorded = folder.read_json(STAGE_FILE).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return []
    present = folder.files()
    out = []
    for rel, (size, sha) in recorded.items():
        if rel not in present:
            out.append((rel, "missing"))
        elif present[rel] != size:
            out.append((rel, f"{present[rel]} bytes, recorded as {size}"))
        elif folder.sha256(rel) != sha:
            out.append((rel, "content differs from its recorded sha256"))
    return out


def drop_damaged(folder: Store, found: list[tuple[str, str]]) -> None:
    """Delete the damaged files and the record, so the stage redoes what they held: a stage
    resumes unit by unit (shard, job, checkpoint) from what is sound and redoes what is not."""
    for rel, _ in found:
        folder.delete(rel)
    mark_incomplete(folder)


def mark_incomplete(folder: Store) -> None:
    folder.delete(STAGE_FILE)


def _relative(uri: str, folder: str) -> str:
    prefix = folder.rstrip("/") + "/"
    return uri[len(prefix):] if uri.startswith(prefix) else uri


def mark_complete(folder: Store, config_hash: str, result: StageResult, started: float) -> None:
    """Write `stage.json`: the last write of a stage, in one piece."""
    finished = time.time()
    folder.write_json(STAGE_FILE, {
        "stage": result.stage,
        "config_hash": config_hash,
        "versions": package_versions(),
        "rows": result.rows,
        "metrics": result.metrics,
        # relative to this folder, so the record of a copied workdir names the copy's files
        "outputs": {k: _relative(v, folder.uri()) for k, v in result.outputs.items()},
        "files": digests(folder),
        "timings": {"started": started, "finished": finished, "seconds": finished - started},
    })



def fetch(remote: Store, local: Store) -> None:
    """Make `local` a copy of the completed stage folder `remote`: its recorded files, each
    fetched only where the local copy differs from the record, its `stage.json`, and nothing
    else (a stale local file would be read as the stage's)."""
    record = remote.read_json(STAGE_FILE)
    files = record.get("files") or {}
    pull(remote, local, files)
    for rel in local.files():
        if rel not in files and rel != STAGE_FILE:
            local.delete(rel)
    remote.copy_to(STAGE_FILE, local)


def local_view(workdir: Store, folders: list[str]) -> Store:
    """A workdir whose completed stage `folders` (workdir-relative) are local files: the
    workdir itself where it is local, else its mirror with those folders fetched."""
    if workdir.is_local:
        return workdir
    local = mirror_of(workdir)
    for rel in folders:
        if workdir.sub(rel).exists(STAGE_FILE):
            fetch(workdir.sub(rel), local.sub(rel))
    return local
