"""The loop that runs the stages, in the order and with the dependencies they declare
(gammaface/stages).

A stage's config hash covers the config keys it reads and the hashes of the stages it needs, so
changing one setting reruns only the stages downstream of it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import time
from contextlib import nullcontext
from typing import Callable

from gammaface.run import layout, stage, tracking
from gammaface.storage import lock as workdir_lock
from gammaface.config import Config
from gammaface.common.errors import UserError, explain
from gammaface.run.stage import StageContext, StageResult
from gammaface.stages import Stage, by_name, check_placement, declared, makers
from gammaface.stages import folders as stage_folders
from gammaface.stages import folder as stage_folder
from gammaface.storage.store import Store, mirror_of, pull, push


# the stages as they declare themselves (gammaface/stages/<name>/__init__.py), in pipeline order
STAGES: tuple[Stage, ...] = declared()
BY_NAME = by_name()
STAGE_NAMES = tuple(BY_NAME)


def stage_hash(name: str, cfg: Config) -> str:
    spec = BY_NAME[name]
    own = cfg.section_hash(*spec.keys(cfg))
    upstream = ",".join(stage_hash(n, cfg) for n in spec.needs(cfg))
    return hashlib.sha256(f"{name}|{own}|{upstream}".encode()).hexdigest()[:16]


def select(names: list[str] | None) -> list[str]:
    """Validate a --stages list and put it in pipeline order; None means every stage."""
    if not names:
        return list(STAGE_NAMES)
    for n in names:
        if n not in BY_NAME:
            raise UserError(f"unknown stage {n!r}; stages are {', '.join(STAGE_NAMES)}.")
    return [n for n in STAGE_NAMES if n in names]


def _check_inputs(name: str, cfg: Config, workdir: Store, selected: list[str]) -> None:
    for need in BY_NAME[name].needs(cfg):
        if need in selected:
            continue
        folder = workdir.sub(stage_folder(need, cfg))
        if stage.completed_hash(folder) != stage_hash(need, cfg):
            raise UserError(f"stage {name!r} needs {need!r}, which has not completed for this "
                            f"config in {workdir.root}; add it to --stages.")
        found = stage.damaged(folder)
        if found:
            raise UserError(f"stage {name!r} needs {need!r}, whose {_listed(found, folder)} "
                            f"changed after it completed; add {need!r} to --stages to redo it.")


def _check_own_inputs(name: str, cfg: Config, workdir: Store) -> None:
    """A stage that will run and reads inputs from outside the workdir (a dataset's folders, a
    spec file) checks them first, through its module's `check(cfg)`: a bad one is refused
    while every completed stage is still whole."""
    if stage.completed_hash(workdir.sub(stage_folder(name, cfg))) == stage_hash(name, cfg):
        return  # skipped (a damaged file is redone from the same inputs, checked as it runs)
    check = getattr(importlib.import_module(BY_NAME[name].work), "check", None)
    if check is not None:
        check(cfg)


def _listed(found: list[tuple[str, str]], folder: Store) -> str:
    rel, why = found[0]
    more = f" and {len(found) - 1} more file(s)" if len(found) > 1 else ""
    return f"file {folder.uri(rel)} ({why}){more}"


def adopt(cfg: Config, source: Store, workdir: Store, echo: Callable[[str], None] = print
          ) -> list[str]:
    """Copy into `workdir` every stage that `source` completed for this config (same stage
    hash) and `workdir` has not; artifacts name their files relative to their workdir, so the
    copy runs from itself. Returns the stages copied."""
    if not (source.is_local and workdir.is_local):
        raise UserError("--from copies stage folders between local (or mounted) workdirs.")
    if not os.path.isdir(source.path()):
        raise UserError(f"--from workdir {source.root} does not exist.")
    if os.path.realpath(source.path()) == os.path.realpath(workdir.path()):
        return []
    copied = []
    # the source's lock keeps a run there from writing while its stages are copied; a folder
    # this process cannot write (a read-only mount, a colleague's runs) cannot take a lock, and
    # is read as it is
    writable = os.access(source.path(), os.W_OK)
    with workdir_lock.hold(source, f"copied into {workdir.root}") if writable else nullcontext():
        for name in STAGE_NAMES:
            rel = stage_folder(name, cfg)
            h = stage_hash(name, cfg)
            if stage.completed_hash(source.sub(rel)) != h or stage.completed_hash(workdir.sub(rel)) == h:
                continue
            found = stage.damaged(source.sub(rel))
            if found:
                echo(f"not copied: {name}, whose {_listed(found, source.sub(rel))} changed "
                     "after it completed")
                continue
            workdir.delete(rel)
            shutil.copytree(source.path(rel), workdir.path(rel), symlinks=True)
            copied.append(name)
    echo(f"copied from {source.root}: {', '.join(copied) or 'no completed stage of this config'}")
    return copied


def run(cfg: Config, stages: list[str] | None = None,
        echo: Callable[[str], None] = stage.say, start_from: str | None = None) -> list[StageResult]:
    selected = select(stages)
    check_placement(cfg)
    workdir = Store(cfg.workdir)
    # a remote workdir is staged through a local mirror: stages read and write local files,
    # and each stage's folder goes up whole, stage.json last, when it completes
    local = workdir if workdir.is_local else mirror_of(workdir)
    for note in cfg.notes:
        echo(f"config: {note}")
    results: list[StageResult] = []
    try:
        with workdir_lock.hold(local, "gammaface run " + ",".join(selected)):
            if start_from:
                adopt(cfg, Store(start_from), workdir, echo)
            for name in selected:
                _check_inputs(name, cfg, workdir, selected)
            with tracking.pipeline_run(cfg, workdir, selected) as parent_id:
                staged = "" if local is workdir else f" (staged through {local.root})"
                echo(f"workdir {workdir.root}{staged}; MLflow run {parent_id}")
                for name in selected:  # what the stages that will run read, before any is undone
                    _check_own_inputs(name, cfg, workdir)
                for name in selected:
                    results.append(_run_one(name, cfg, workdir, local, echo))
    except UserError:
        raise
    except Exception as exc:  # a full disk, a read-only folder, an unreachable store
        message = explain(exc, where=f"workdir {workdir.root}")
        if message is None:
            raise
        raise UserError(message) from None
    return results


def _upstream(name: str, cfg: Config) -> list[str]:
    """Every stage `name` reads from, directly or through another's artifacts (a generated
    set's manifest names the prepared images it was drawn from), in pipeline order."""
    seen: set[str] = set()
    todo = list(BY_NAME[name].needs(cfg))
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.add(need)
            todo.extend(BY_NAME[need].needs(cfg))
    return [n for n in STAGE_NAMES if n in seen]


def _run_one(name: str, cfg: Config, workdir: Store, local: Store,
             echo: Callable[[str], None]) -> StageResult:
    rel = stage_folder(name, cfg)
    folder = workdir.sub(rel)
    h = stage_hash(name, cfg)
    if stage.completed_hash(folder) == h:
        found = stage.damaged(folder)
        if not found:
            echo(f"[{name}] complete for this config, skipped")
            return StageResult(name, skipped=True)
        echo(f"[{name}] {_listed(found, folder)} changed after the stage completed; "
             "redoing what it held")
        stage.drop_damaged(folder, found)
    stage.mark_incomplete(folder)
    echo(f"[{name}] running")
    started = time.time()
    module = importlib.import_module(BY_NAME[name].work)
    remote = local is not workdir
    own = local.sub(rel)
    shared: dict[str, str] = {}
    if remote:
        for need in _upstream(name, cfg):
            stage.fetch(workdir.sub(stage_folder(need, cfg)), local.sub(stage_folder(need, cfg)))
        stage.mark_incomplete(own)
        # what an earlier, interrupted run left: resumed from (Ray Train reads its checkpoints
        # from the bucket itself)
        shared = pull(folder, own, leave=(layout.RAY_TRAIN_DIR,))
    with tracking.stage_run(name, h):
        ctx = StageContext(cfg, local, name, lambda n: stage_hash(n, cfg), echo=echo,
                           folders=stage_folders(cfg), makers=makers(),
                           publish=folder if remote else None)
        result = module.run(ctx)
        result.seconds = time.time() - started
        tracking.log_metrics({"stage_seconds": result.seconds})
    if remote:  # units published meanwhile from other machines, then the whole folder up
        shared.update(pull(folder, own, skip=shared, leave=(layout.RAY_TRAIN_DIR,)))
        stage.mark_complete(own, h, result, started)
        sent = push(own, folder, shared, last=(layout.STAGE_FILE,), leave=(layout.RAY_TRAIN_DIR,))
        echo(f"[{name}] {sent} file(s) uploaded to {folder.uri()}")
    else:
        stage.mark_complete(folder, h, result, started)
    echo(f"[{name}] done in {result.seconds:.1f} s")
    return result
