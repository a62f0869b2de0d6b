"""The names of every file that a stage other than its writer reads, and where the dataset
lives in the workdir. Each stage's folder is the stage's own declaration (gammaface.stages)."""

from __future__ import annotations

from gammaface.config import Config
from gammaface.data.manifest import MANIFEST_FILE

STAGE_FILE = "stage.json"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
COMPARE_DIR = "compare"  # `gammaface compare`'s tables: outside every stage's folder


# train_ddpm: the diffusers folders `unet/` and `scheduler/`, and a sample sheet
DDPM_SAMPLES = "samples.png"
# Ray Train's checkpoints inside a training stage's folder. On a remote workdir Ray Train
# writes them to the bucket itself, so the mirror neither fetches nor deletes them.
RAY_TRAIN_DIR = "ray_train"
# gmm_search
GMM_SELECTED = "selected.json"  # the chosen K and the space the mixture lives in
GMM_BIC_PLOT = "bic.png"
GMM_PCA = "pca.npz"
GMM_FEATURES = "features.npy"  # the classifier's embedding of the latents' source images
# generate: per method `<method>/manifest.parquet` and its component grid; across methods the
# components' weights and compositions
GENERATED_GRID = "components.png"
GENERATED_COMPOSITIONS = "compositions.csv"
GENERATED_PREDICTED = "predicted_balance.csv"  # each mixture method's balance, before rendering
GENERATED_QUOTA = "quota.json"  # a quota set's counts per cell, shortfall and renders per kept
# pseudo_label: per method `<method>/manifest.parquet`; the balance of every set
BALANCE_CSV = "balance.csv"
BALANCE_PLOT = "balance.png"
# audit: every set as the judge sees it (balance three ways, agreement, novelty)
AUDIT_CSV = "audit.csv"
AUDIT_JSON = "audit.json"
# downstream: per target `<target>/results.csv`, one row per job
DOWNSTREAM_RESULTS = "results.csv"
# report: the page (read back by `gammaface run` when the stage is skipped)
REPORT = "report.md"
SWEEP_DIR = "sweep"  # `gammaface gmm sweep`, beside the stages' folders
SWEEP_TABLE = "sweep.csv"
SWEEP_PLOT = "sweep.png"  # chosen K and NMI against t*, one line per source and space
REPORT_HTML = "report.html"  # the same page, self-contained


def gmm_mixture(k: int) -> str:
    return f"gmm_k{k}.npz"


def dataset_dir(cfg: Config) -> str:
    return f"data/{cfg.data.dataset}"


def manifest_path(cfg: Config) -> str:
    """The dataset's manifest, relative to the workdir (what artifacts record, never absolute:
    a copied or moved workdir reads its own)."""
    return f"{dataset_dir(cfg)}/{MANIFEST_FILE}"
