"""The toy upstream the tests share: the smoke config's stages up to the mixture search (the
judge among them), built once per session by the `smoke_upstream` fixture, and copies of a
workdir to run in. Its settings are the suite's toy settings (tests/test_jobs.py TOY), so the
smoke config's end-to-end run starts from it too."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

SMOKE = Path(__file__).resolve().parents[1] / "jobs" / "smoke.yaml"
SMOKE_UPSTREAM = ["prepare", "train_ddpm", "train_classifiers", "train_judge", "harvest", "gmm_search"]
SMOKE_K = 3  # BIC picks K = 1 at toy size; three components exercise every path


def copy_workdir(source: Path, dest: Path, *leave_out: str) -> Path:
    """A copy of a workdir to run stages in (its artifacts name files relative to it, and its
    MLflow store is re-pointed at the copy on the first run), without the folders named."""
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(*leave_out))
    return dest


def skipped_stages(stdout: str) -> list[str]:
    """The stages a run found complete for its config, in the order it named them."""
    return re.findall(r"^\[(\w+)\] complete for this config, skipped$", stdout, re.M)
