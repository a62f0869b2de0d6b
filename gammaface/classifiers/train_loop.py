"""The attribute-classifier loop that Ray Train runs on every worker: Adam on the sum of one
masked cross-entropy per attribute, with the degradation augmentation, one checkpoint per epoch.

Every worker takes the same number of steps per epoch (DDP needs it): the global step count is
the train split over the global batch, and each worker draws its rows from its own shard with
the step-seeded permutations of the DDPM loop, so a resumed run takes the steps an
uninterrupted one would have. The rows (paths and label codes) reach the workers as a Ray
dataset; the images are read from storage a batch at a time.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gammaface.classifiers.augment import degrade
from gammaface.classifiers.labels import MISSING
from gammaface.classifiers.model import AttributeNet
from gammaface.distributed import train as ray_train
from gammaface.common.images import load_resized, to_model_space
from gammaface.common.seeds import batch_indices, seed_of


def masked_loss(logits: dict[str, torch.Tensor], targets: torch.Tensor, attributes: list[str]
                ) -> torch.Tensor:
    """Sum over attributes of the mean cross-entropy over rows where that attribute is known.

    Every head is part of the graph on every step, with weight zero where the batch holds no
    label for it: under DDP a head left out on one rank but not on another would leave its
    gradients unreduced and stop the step (null race or hair labels do exactly that)."""
    total = torch.zeros((), device=targets.device)
    for j, name in enumerate(attributes):
        y = targets[:, j]
        known = (y != MISSING).sum()
        summed = F.cross_entropy(logits[name].float(), y, ignore_index=MISSING, reduction="sum")
        # `0 * logits.sum()` keeps the head in the graph even on a batch with no known label
        total = total + summed / known.clamp(min=1) + 0.0 * logits[name].sum()
    return total


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])
    device = ray.train.torch.get_device() if cfg["use_gpu"] else torch.device("cpu")
    attributes = cfg["attributes"]
    share = ray_train.worker_rows(rank, world)
    if share.empty:
        raise ValueError(f"worker {rank} has no training images; use fewer workers.")
    paths = list(share["path"])
    targets = torch.as_tensor(share[[_label(a) for a in attributes]].to_numpy(np.int64))
    local_batch = math.ceil(cfg["batch_size"] / world)
    steps_per_epoch = math.ceil(cfg["rows"] / cfg["batch_size"])

    torch.manual_seed(seed_of(cfg["seed"], 0))
    model = AttributeNet(cfg["backbone"], attributes, cfg["image_size"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
    epoch = 0
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d:
            folder = Path(d)
            state = ray_train.checkpoint_state(folder, cfg["config_hash"], ray_train.FILES_WITHOUT_EMA)
            model.load_state_dict(ray_train.load_weights(folder, ray_train.MODEL_FILE))
            optimizer.load_state_dict(ray_train.load_optimizer(folder)["optimizer"])
            epoch = int(state["epoch"])
    model.to(device)
    ddp = ray.train.torch.prepare_model(model) if cfg["use_gpu"] or world > 1 else model
    core = ddp.module if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) else ddp
    log = ray_train.rank_log(cfg, rank)

    def batch_of(step: int) -> tuple[np.ndarray, np.ndarray]:
        rows = batch_indices(step, len(paths), local_batch, cfg["seed"], rank)
        # on the read-ahead thread already: a pool of its own would only compete for the cores
        return load_resized(cfg["image_root"], [paths[r] for r in rows], cfg["image_size"],
                            workers=1), rows

    batches = ray_train.read_ahead(batch_of, range(epoch * steps_per_epoch,
                                                   cfg["epochs"] * steps_per_epoch))
    while epoch < cfg["epochs"]:
        ddp.train()
        tick, losses, correct, seen = time.perf_counter(), [], 0.0, 0.0
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            images, rows = next(batches)
            gen = torch.Generator().manual_seed(seed_of(cfg["seed"], rank, step, 2))
            x = to_model_space(images)
            flip = torch.rand(len(rows), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            if cfg["augment"] > 0:
                x = degrade(x, gen, p=cfg["augment"])
            y = targets[rows].to(device)
            logits = ddp(x.to(device))
            loss = masked_loss(logits, y, attributes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            with torch.no_grad():
                for j, name in enumerate(attributes):
                    known = y[:, j] != MISSING
                    correct += float((logits[name].argmax(1)[known] == y[known, j]).sum())
                    seen += float(known.sum())
        epoch += 1
        elapsed = time.perf_counter() - tick
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)),
                   "train_accuracy": correct / max(seen, 1.0),
                   "images_per_s": steps_per_epoch * local_batch * world / max(elapsed, 1e-9)}
        if rank == 0:
            log.metrics({k: v for k, v in metrics.items() if k != "epoch"}, epoch)
            print(f"epoch {epoch}/{cfg['epochs']} loss {metrics['loss']:.4f} "
                  f"train acc {metrics['train_accuracy']:.3f} "
                  f"{metrics['images_per_s']:.0f} img/s, ETA {elapsed * (cfg['epochs'] - epoch):.0f} s",
                  flush=True)
        _report(cfg, rank, world, epoch, core, optimizer, metrics)


def _report(cfg: dict[str, Any], rank: int, world: int, epoch: int, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, metrics: dict[str, float]) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            ray_train.save_checkpoint(Path(d), model.state_dict(), None, {"optimizer": optimizer.state_dict()},
                            {"epoch": epoch, "config_hash": cfg["config_hash"], "world_size": world})
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=ckpt)


def _label(attribute: str) -> str:
    """The training table's column of an attribute's class codes."""
    return f"label/{attribute}"


def fit_classifier(c: Any, train_paths: list[str], labels: np.ndarray, image_root: str,
                   image_size: int, seed: int, config_hash: str, storage_path: str, name: str,
                   log: Any, resources: dict[str, float] | None = None) -> AttributeNet:
    """Train one attribute classifier (settings `c`: a ClassifiersConfig) on Ray Train from the
    driver, resuming from `storage_path`/`name` where an earlier run stopped; the trained net."""
    threads = ray_train.cpus_per_worker(None, c.use_gpu, c.num_workers)
    loop_cfg: dict[str, Any] = {
        "backbone": c.backbone, "attributes": list(c.attributes), "image_size": image_size,
        "epochs": c.epochs, "batch_size": c.batch_size, "learning_rate": c.learning_rate,
        "augment": c.augment, "use_gpu": c.use_gpu, "seed": seed, "config_hash": config_hash,
        "rows": len(train_paths), "image_root": image_root, "threads": threads, "log": log,
    }
    codes = np.asarray(labels, dtype=np.int64).reshape(len(train_paths), len(c.attributes))
    table = pd.DataFrame({"path": list(train_paths),
                          **{_label(a): codes[:, j] for j, a in enumerate(c.attributes)}})
    final, _ = ray_train.fit(train_loop_per_worker, loop_cfg, num_workers=c.num_workers,
                             use_gpu=c.use_gpu, cpus_per_worker=threads, storage_path=storage_path,
                             name=name, max_failures=c.max_failures, what=name.split("-")[0],
                             resources=resources, table=table)
    model = AttributeNet(c.backbone, list(c.attributes), image_size)
    with ray_train.final_files(final) as folder:
        ray_train.checkpoint_state(folder, config_hash, ray_train.FILES_WITHOUT_EMA)
        model.load_state_dict(ray_train.load_weights(folder, ray_train.MODEL_FILE))
    return model
