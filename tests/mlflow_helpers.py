"""Reading a workdir's MLflow store through an explicit client.

mlflow.set_tracking_uri would export MLFLOW_TRACKING_URI and leak into later tests' pipelines.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient


def client(workdir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def runs(workdir: Path, experiment: str) -> list:
    c = client(workdir)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


def stage_run(workdir: Path, experiment: str, stage: str):
    return next(r for r in runs(workdir, experiment) if r.data.tags.get("stage") == stage)


def artifact_paths(workdir: Path, run) -> set[str]:
    """Every artifact file of a run, by its path inside the run's artifact root."""
    c = client(workdir)
    out, stack = set(), [None]
    while stack:
        for item in c.list_artifacts(run.info.run_id, stack.pop()):
            if item.is_dir:
                stack.append(item.path)
            else:
                out.add(item.path)
    return out
