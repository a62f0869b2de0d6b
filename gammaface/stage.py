"""What every stage shares: its result, its `stage.json`, and the rule for skipping it.

A folder whose `stage.json` carries the current config hash is complete and skipped; a folder
without it (or with another hash) is incomplete and redone, never trusted.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib import metadata

from gammaface.layout import STAGE_FILE
from gammaface.storage import Store

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
        "timings": {"started": started, "finished": finished, "seconds": finished - started},
    })

