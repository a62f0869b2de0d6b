"""Stage `train_classifiers`: the manifest's train split -> `classifiers/` (model.safetensors,
classifier.json, metrics.json).

One ResNet with a head per attribute, trained in Ray Train's TorchTrainer (DDP over gloo on CPU
workers). The test split is scored twice: as it is, and degraded the way generated images are
(blur, low contrast and saturation, noise), since the labeller's job is labelling generated
faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from gammaface import layout, ray_train, tracking
from gammaface.classifiers import labeller as labeller_io
from gammaface.classifiers.augment import degrade
from gammaface.classifiers.labels import MISSING, encode
from gammaface.classifiers.labeller import Labeller
from gammaface.classifiers.model import AttributeNet
from gammaface.classifiers.train_loop import train_loop_per_worker
from gammaface.config import Config
from gammaface.data import manifest, registry
from gammaface.diffusion import checkpoint
from gammaface.diffusion.images import load_resized, to_model_space
from gammaface.errors import UserError
from gammaface.ray_runtime import connect
from gammaface.stage import StageResult
from gammaface.storage import Store

METRICS_FILE = "metrics.json"
RAY_TRAIN_DIR = "ray_train"
DEGRADED_SEED = 12345


def image_size(cfg: Config) -> int:
    """The labeller sees images at the size the DDPM generates them."""
    return cfg.classifiers.image_size or cfg.ddpm_resolution


def score(labeller: Labeller, images: np.ndarray, df: pd.DataFrame) -> dict[str, float]:
    """Accuracy per attribute and recall per class (keys `accuracy/<attr>`,
    `recall/<attr>/<class>`), over rows where the attribute is known."""
    preds = labeller.predict(images)
    out: dict[str, float] = {}
    codes = encode(df, labeller.attributes)
    for j, name in enumerate(labeller.attributes):
        y = codes[:, j]
        known = y != MISSING
        if not known.any():
            continue
        hit = preds[name].classes[known] == y[known]
        out[f"accuracy/{name}"] = float(hit.mean())
        for c, cls in enumerate(registry.get(name).classes):
            mine = y[known] == c
            if mine.any():
                out[f"recall/{name}/{cls}"] = float(hit[mine].mean())
    return out


def degraded(images: np.ndarray, seed: int = DEGRADED_SEED) -> torch.Tensor:
    """Every image degraded (p = 1), reproducibly, as float NCHW."""
    return degrade(to_model_space(images), torch.Generator().manual_seed(seed), p=1.0)


def run(cfg: Config, workdir: Store) -> StageResult:
    from gammaface.pipeline import stage_hash

    c = cfg.classifiers
    connect(cfg.ray)
    out = workdir.sub(layout.stage_dir("train_classifiers", cfg))
    out.makedirs()
    if not out.is_local:
        raise UserError(f"train_classifiers writes its model through a local folder; workdir "
                        f"{workdir.root} is remote, which this stage does not support yet.")
    df, image_root = manifest.read(workdir.path(layout.dataset_dir(cfg), manifest.MANIFEST_FILE))
    train = df[df["split"] == "train"].reset_index(drop=True)
    test = df[df["split"] == "test"].reset_index(drop=True)
    unlabelled = [a for a in c.attributes if train[a].isna().all()]
    if unlabelled:
        raise UserError(f"classifiers.attributes names {', '.join(unlabelled)}, but no train image "
                        f"of {workdir.uri(layout.manifest_path(cfg))} has "
                        f"{'that label' if len(unlabelled) == 1 else 'those labels'}; drop "
                        f"{'it' if len(unlabelled) == 1 else 'them'} from classifiers.attributes.")
    if len(train) < c.num_workers:
        raise UserError(f"the train split has {len(train)} images, fewer than "
                        "classifiers.num_workers.")
    size = image_size(cfg)
    h = stage_hash("train_classifiers", cfg)
    threads = ray_train.cpus_per_worker(None, c.use_gpu, c.num_workers)
    run_ = mlflow.active_run()
    loop_cfg: dict[str, Any] = {
        "backbone": c.backbone, "attributes": list(c.attributes), "image_size": size,
        "epochs": c.epochs, "batch_size": c.batch_size, "learning_rate": c.learning_rate,
        "augment": c.augment, "use_gpu": c.use_gpu, "seed": cfg.seed, "config_hash": h,
        "paths": list(train["path"]), "labels": encode(train, list(c.attributes)).tolist(),
        "image_root": image_root, "threads": threads, "mlflow_uri": mlflow.get_tracking_uri(),
        "mlflow_run_id": run_.info.run_id if run_ else None,
    }
    tracking.log_params({"classifiers.image_size_used": size})
    final, _ = ray_train.fit(train_loop_per_worker, loop_cfg, num_workers=c.num_workers,
                             use_gpu=c.use_gpu, cpus_per_worker=threads,
                             storage_path=out.path(RAY_TRAIN_DIR), name=f"classifiers-{h}",
                             max_failures=c.max_failures, what="classifiers")
    checkpoint.read_state(final, h, checkpoint.FILES_WITHOUT_EMA)
    model = AttributeNet(c.backbone, list(c.attributes), size)
    model.load_state_dict(checkpoint.load_weights(final, checkpoint.MODEL_FILE))
    labeller_io.save(Path(out.path()), model, c.backbone, size)

    labeller = Labeller.load(out.path())
    test_images = load_resized(image_root, list(test["path"]), size)
    metrics = {"clean": score(labeller, test_images, test),
               "degraded": score(labeller, degraded(test_images), test), "test_rows": len(test)}
    out.write_json(METRICS_FILE, metrics)
    for kind in ("clean", "degraded"):
        tracking.log_metrics({f"{kind}/{k}": v for k, v in metrics[kind].items()})
    mlflow.log_artifact(out.path(METRICS_FILE))
    mlflow.log_artifact(out.path(labeller_io.INFO_FILE))
    print("classifier accuracy on the test split (clean / degraded): " + ", ".join(
        f"{a} {metrics['clean'].get(f'accuracy/{a}', float('nan')):.3f}/"
        f"{metrics['degraded'].get(f'accuracy/{a}', float('nan')):.3f}" for a in c.attributes))
    return StageResult("train_classifiers", rows={"train_images": len(train), "test_images": len(test)},
                       outputs={"model": out.uri(labeller_io.WEIGHTS_FILE),
                                "metrics": out.uri(METRICS_FILE)},
                       metrics={k: v for k, v in metrics["clean"].items() if k.startswith("accuracy/")})
