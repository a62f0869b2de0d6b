"""The downstream loop Ray Train runs on every worker: each worker trains its share of the
jobs (one independent classifier D per job, no gradient sharing between jobs) and writes each
job's test predictions when it is done. A restarted worker skips the jobs whose predictions
exist, so the unit of resume is the job."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gammaface.classifiers.model import AttributeNet
from gammaface.images import load_resized, to_model_space
from gammaface.ray_train import Log, NoLog
from gammaface.seeds import seed_of
from gammaface.storage import Store

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


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])
    device = ray.train.torch.get_device() if cfg["use_gpu"] else torch.device("cpu")
    out = Store(cfg["out"])
    test = pd.DataFrame(cfg["test"])
    test_images = load_resized("/", list(test["file"]), cfg["image_size"])
    mine = cfg["jobs"][rank::world]
    first = time.perf_counter()
    for i, job in enumerate(mine):
        folder = out.sub(job["folder"])
        if folder.exists(PREDICTIONS):
            continue
        started = time.perf_counter()
        table, _ = folder.read_parquet(TRAIN_TABLE)
        # files are relative to the workdir, or absolute for a dataset kept elsewhere
        images = load_resized(cfg["workdir"], list(table["file"]), cfg["image_size"])
        log = (cfg.get("log") or NoLog()).for_run(job.get("run_id"))  # the job's own run
        weights = table["weight"].to_numpy() if "weight" in table.columns else None
        model = train_one(cfg, job, images, table["label"].to_numpy(), device, log, weights)
        probs = predict(model, cfg["target"], test_images, device)
        pred = test[["path", "label"] + cfg["protected"]].rename(columns={"label": "y_true"})
        pred["y_pred"] = probs.argmax(1)
        for c in range(probs.shape[1]):
            pred[f"prob_{c}"] = probs[:, c].astype(np.float32)
        folder.write_parquet(PREDICTIONS, pred)
        print(f"[worker {rank}] {i + 1}/{len(mine)} {job['name']}: accuracy "
              f"{float((pred['y_pred'] == pred['y_true']).mean()):.3f} "
              f"in {time.perf_counter() - started:.0f} s, ETA "
              f"{(time.perf_counter() - first) / (i + 1) * (len(mine) - i - 1):.0f} s", flush=True)
    ray.train.report({"jobs": len(mine)})
