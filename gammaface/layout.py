"""Where each stage's artifacts live inside the workdir: the one place that spells these paths."""

from __future__ import annotations

from gammaface.config import Config
from gammaface.data.manifest import MANIFEST_FILE

STAGE_FILE = "stage.json"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
COMPARE_DIR = "compare"  # `gammaface compare`'s tables: outside every stage's folder


def dataset_dir(cfg: Config) -> str:
    return f"data/{cfg.data.dataset}"


def manifest_path(cfg: Config) -> str:
    """The dataset's manifest, relative to the workdir (what artifacts record, never absolute:
    a copied or moved workdir reads its own)."""
    return f"{dataset_dir(cfg)}/{MANIFEST_FILE}"


STAGE_DIRS = {
    "train_ddpm": "ddpm",
    "harvest": "latents",
    "gmm_search": "gmm",
    "train_classifiers": "classifiers",
    "generate": "generated",
    "pseudo_label": "labels",
    "downstream": "downstream",
    "report": "report",
}


def stage_dir(stage: str, cfg: Config) -> str:
    return dataset_dir(cfg) if stage == "prepare" else STAGE_DIRS[stage]
