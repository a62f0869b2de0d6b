"""What every Ray Train stage shares: running (or resuming) a TorchTrainer, turning a worker's
failure the user can act on into one sentence, and rank 0's direct line to the stage's MLflow run (Ray
Train V2 has no MLflow callback, so the driver hands the run id to the workers)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gammaface.errors import UserError, explain


def fit(loop: Callable[[dict[str, Any]], None], loop_cfg: dict[str, Any], *, num_workers: int,
        use_gpu: bool, cpus_per_worker: int, storage_path: str, name: str, max_failures: int,
        what: str, checkpointed: bool = True) -> tuple[Path | None, dict[str, Any]]:
    """Run `loop` on every worker; rerunning with the same storage_path and name resumes from
    the latest checkpoint. Returns a local copy of the final checkpoint (None for a loop that
    keeps its own progress on disk, `checkpointed=False`) and rank 0's last reported metrics."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        loop, train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        result = trainer.fit()
    except Exception as exc:
        # a worker's damaged checkpoint, bad image or full disk, as one sentence
        message = explain(exc, where=storage_path)
        if message:
            raise UserError(message) from None
        raise
    if not checkpointed:
        return None, dict(result.metrics or {})
    if result.checkpoint is None:
        raise RuntimeError(f"{what} training finished without a checkpoint.")
    local = Path(tempfile.mkdtemp(prefix=f"gammaface-{what}-"))
    result.checkpoint.to_directory(str(local))
    return local, dict(result.metrics or {})


def cpus_per_worker(explicit: int | None, use_gpu: bool, num_workers: int,
                    nodes: list[float] | None = None, available: float | None = None) -> int:
    """The configured CPUs per worker, else the cluster's available CPUs shared out, never more
    than the largest node has: a worker is placed on one node, and asking for more CPUs than
    any node holds would wait for a placement that never comes. `nodes` (CPUs per node) and
    `available` (free CPUs) default to the cluster's."""
    if explicit:  # trusted as given: an autoscaler may bring nodes larger than today's
        return explicit
    if use_gpu:
        return 1
    import ray

    from gammaface.ray_runtime import node_cpus

    largest = int(max(nodes or node_cpus()))
    total = int(ray.available_resources().get("CPU", 1) if available is None else available)
    return max(1, min(largest, total // num_workers))


def seed_of(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across processes and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class WorkerMlflow:
    """Logs metrics and images into an existing MLflow run from inside a Ray Train worker."""

    def __init__(self, uri: str | None, run_id: str | None) -> None:
        self.run_id = run_id
        self.client = None
        if uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(uri)

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in values.items()])

    def image(self, array: np.ndarray, name: str) -> None:
        if self.client is None:
            return
        from PIL import Image

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            Image.fromarray(array).save(path)
            self.client.log_artifact(self.run_id, str(path), artifact_path="samples")
