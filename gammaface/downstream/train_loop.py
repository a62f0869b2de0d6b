"""One downstream job: an independent classifier D (no gradient is shared between jobs), trained
in its own Ray task, which writes the job's test predictions when it is done. A job whose
predictions exist is skipped, so the unit of retry and of resume is the job."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gammaface.classifiers.model import AttributeNet
from gammaface.common.images import load_resized, to_model_space
from gammaface.distributed.train import Log, NoLog
from gammaface.common.seeds import seed_of
from gammaface.storage.store import Store

PREDICTIONS = "predictions.parquet"
TRAIN_TABLE = "train.parquet"


def train_one(cfg: dict[str, Any], job: dict[str, Any], images: np.ndarray, labels: np.ndarray,
              device: torch.device, log: Log, weights: np.ndarray | None = None) -> AttributeNet:
    """One classifier on the job's images; `weights` (mean 1) scale each image's loss, which is
    how `reweight` gives a short cell more say without repeating its images."""
    target = cfg["target"]
    torch.manual_seed(seed_of(job["seed"], 5))
    model = AttributeNet(cfg["backbone"], [target], cfg["image_size"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
    n, batch = len(images), cfg["batch_size"]
    y_all = torch.tensor(np.asarray(labels), dtype=torch.long)
    w_all = torch.ones(n) if weights is None else torch.tensor(np.asarray(weights), dtype=torch.float32)
    for epoch in range(cfg["epochs"]):
        model.train()
        order = np.random.default_rng(seed_of(job["seed"], 6, epoch)).permutation(n)
        gen = torch.Generator().manual_seed(seed_of(job["seed"], 7, epoch))
        losses = []
        for s in range(0, n, batch):
            rows = order[s:s + batch]
            x = to_model_space(images[rows])
            flip = torch.rand(len(rows), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            per_image = F.cross_entropy(model(x.to(device))[target].float(), y_all[rows].to(device),
                                        reduction="none")
            loss = (per_image * w_all[rows].to(device)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        log.metrics({"train_loss": float(np.mean(losses))}, epoch + 1)
    return model


@torch.no_grad()
def predict(model: AttributeNet, target: str, images: np.ndarray, device: torch.device
            ) -> np.ndarray:
    model.eval()
    probs = [torch.softmax(model(to_model_space(images[s:s + 512]).to(device))[target].float(), 1).cpu()
             for s in range(0, len(images), 512)]
    return torch.cat(probs).numpy()


def train_job(job: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """One job, as its own Ray task: train its classifier, write its test predictions. `cfg`
    holds what every job shares, the evaluation images included (put in the object store once).
    A job whose predictions exist is done: a retried or rerun task returns at once."""
    folder = Store(cfg["out"]).sub(job["folder"])
    if folder.exists(PREDICTIONS):
        return {"accuracy": None, "seconds": 0.0}
    started = time.perf_counter()
    torch.set_num_threads(cfg["threads"])
    # Ray gives a task with GPUs its own CUDA_VISIBLE_DEVICES: "cuda" is the share it asked for
    device = torch.device("cuda" if cfg["use_gpu"] and torch.cuda.is_available() else "cpu")
    test = cfg["test"]
    table, _ = folder.read_parquet(TRAIN_TABLE)
    # files are relative to the workdir, or absolute for a dataset kept elsewhere
    images = load_resized(cfg["workdir"], list(table["file"]), cfg["image_size"])
    log = (cfg.get("log") or NoLog()).for_run(job.get("run_id"))  # the job's own run
    weights = table["weight"].to_numpy() if "weight" in table.columns else None
    model = train_one(cfg, job, images, table["label"].to_numpy(), device, log, weights)
    probs = predict(model, cfg["target"], cfg["test_images"], device)
    pred = test[["path", "label"] + cfg["protected"]].rename(columns={"label": "y_true"})
    pred["y_pred"] = probs.argmax(1)
    for c in range(probs.shape[1]):
        pred[f"prob_{c}"] = probs[:, c].astype(np.float32)
    folder.write_parquet(PREDICTIONS, pred)
    return {"accuracy": float((pred["y_pred"] == pred["y_true"]).mean()),
            "seconds": time.perf_counter() - started}
