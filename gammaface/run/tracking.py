"""MLflow: one parent run per pipeline invocation, one nested run per stage.

The tracking URI comes from the config, else MLFLOW_TRACKING_URI, else a SQLite store in the
workdir; artifacts of that default store live in the workdir too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gammaface.config import Config, dump_yaml
from gammaface.common.errors import UserError
from gammaface.run.layout import MLFLOW_ARTIFACTS, MLFLOW_DB
from gammaface.storage.store import Store

_MAX_PARAM_LEN = 500
WORKDIR_TAG = "workdir"  # on a pipeline run: the workdir it ran in
KIND_TAG = "gammaface.kind"  # pipeline, stage, downstream, sweep or setting (one of a sweep's)
PIPELINE_TAG = "gammaface.pipeline_run"  # on a downstream job: the pipeline run it belongs to
DOWNSTREAM_FILTER = f"tags.`{KIND_TAG}` = 'downstream'"


def tracking_uri(cfg: Config, workdir: Store) -> str:
    uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if not workdir.is_local:
        raise UserError(f"workdir {workdir.root} is not local, so the default SQLite MLflow store "
                        "cannot live there; set mlflow.tracking_uri or MLFLOW_TRACKING_URI.")
    return default_uri(workdir)


def default_uri(workdir: Store) -> str:
    """The SQLite store a local workdir keeps its runs in when no other store is named."""
    return f"sqlite:///{workdir.path(MLFLOW_DB)}"


def _rehome(db: str, artifacts: str) -> str | None:
    """A workdir copied or moved elsewhere brings its SQLite store, whose artifact locations are
    absolute (MLflow keeps no relative ones): point them at the copy's own artifact folder, so
    runs log there and not into the original. Returns the old folder where one was moved."""
    import sqlite3

    if not os.path.isfile(db):
        return None
    tail = os.sep + os.path.basename(artifacts)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return None
        old = next((loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                    if loc and loc.endswith(tail) and loc != artifacts), None)
        if old is None:
            return None
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("logged_models", "artifact_location")):
            if table in tables:
                con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE substr({column}, 1, ?) = ?",
                            (artifacts, len(old) + 1, len(old), old))
    return old


def _experiment_id(cfg: Config, workdir: Store, uri: str) -> str:
    import mlflow

    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None  # a server, or a file store, keeps its own
    if uri.startswith("sqlite:"):  # beside the workdir's data, or beside a SQLite file elsewhere
        location = (workdir.path(MLFLOW_ARTIFACTS) if workdir.is_local else
                    os.path.join(os.path.dirname(os.path.abspath(uri.split(":///", 1)[-1])),
                                 MLFLOW_ARTIFACTS))
    return mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)


class _FullDiskNoise(logging.Filter):
    """Drops MLflow's report of a write that failed because the disk is full: its store logs
    each failed write with a traceback, from this process and from its system-metrics thread,
    while the run itself ends on the same full disk in one sentence naming the folder."""

    MARKS = ("database or disk is full", "No space left on device")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        return not any(mark in text for mark in self.MARKS)


# the loggers those reports come from (a filter applies to its own logger's records only)
_FULL_DISK_LOGGERS = ("mlflow.store.db.utils", "mlflow.system_metrics.system_metrics_monitor")


def _quiet_full_disk() -> None:
    for name in _FULL_DISK_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _FullDiskNoise) for f in log.filters):
            log.addFilter(_FullDiskNoise())


@contextlib.contextmanager
def pipeline_run(cfg: Config, workdir: Store, stages: list[str], kind: str = "pipeline"
                 ) -> Iterator[str]:
    """Start the parent run; yields its id. The resolved config is logged as params and YAML.
    `kind`: `sweep` for `gammaface gmm sweep`, whose settings are nested runs (`setting_run`)."""
    import mlflow

    _quiet_full_disk()
    workdir.makedirs()
    uri = tracking_uri(cfg, workdir)
    if uri == default_uri(workdir) and _rehome(
            workdir.path(MLFLOW_DB), workdir.path(MLFLOW_ARTIFACTS)):
        # MLflow keeps each run's artifact location per process, keyed by run id: forget them,
        # or a run adopted from the original would still log into the original's folder
        from mlflow.tracking._tracking_service import utils as tracking_utils

        getattr(tracking_utils, "_artifact_repos_cache", {}).clear()
    use_tracking_uri(uri)
    exp_id = _experiment_id(cfg, workdir, uri)
    end_orphans(exp_id, workdir.root)
    interval = cfg.mlflow.system_metrics
    if interval is not None:
        mlflow.set_system_metrics_sampling_interval(interval)
    with mlflow.start_run(experiment_id=exp_id,
                          run_name=cfg.name if kind == "pipeline" else f"{cfg.name} {kind}",
                          tags={KIND_TAG: kind, "stages": ",".join(stages),
                                WORKDIR_TAG: workdir.root},
                          log_system_metrics=interval is not None) as run, _ended_on_failure():
        log_params(cfg.flat())
        mlflow.log_text(dump_yaml(cfg), "config.yaml")
        yield run.info.run_id


@contextlib.contextmanager
def _ended_on_failure() -> Iterator[None]:
    """End the active run as KILLED on an interrupt (Ctrl-C, SIGTERM) and FAILED on an error;
    where even that cannot be written (a full disk), the next run of the workdir ends it."""
    import mlflow

    try:
        yield
    except BaseException as exc:
        quiet = logging.getLogger("mlflow")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # its store logs every failed write with a traceback
        try:
            stopped = isinstance(exc, (KeyboardInterrupt, SystemExit))  # Ctrl-C, SIGTERM
            mlflow.end_run("KILLED" if stopped else "FAILED")
        except Exception:  # noqa: BLE001 - the original failure is the one to report
            pass
        finally:
            quiet.setLevel(level)
        raise


def end_orphans(experiment_id: str, workdir_root: str) -> list[str]:
    """Mark KILLED the runs of this workdir left RUNNING by a process that died without ending
    them (SIGKILL, a full disk). Called under the workdir's lock, so no live run is among them.
    Returns their ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
    tags = {r.info.run_id: r.data.tags for r in running}

    def workdir_of(run_id: str | None, depth: int = 0) -> str | None:
        if run_id is None or depth > 8:
            return None
        if run_id not in tags:
            try:
                tags[run_id] = client.get_run(run_id).data.tags
            except Exception:  # noqa: BLE001 - a parent deleted from the store
                return None
        own = tags[run_id]
        return own.get(WORKDIR_TAG) or workdir_of(own.get("mlflow.parentRunId"), depth + 1)

    ended = [r.info.run_id for r in running if workdir_of(r.info.run_id) == workdir_root]
    for run_id in ended:
        client.set_tag(run_id, "gammaface.ended", "found RUNNING after its process had gone")
        client.set_terminated(run_id, "KILLED")
    return ended


def use_tracking_uri(uri: str) -> None:
    """Point this process's MLflow client at `uri` without touching MLFLOW_TRACKING_URI.

    mlflow.set_tracking_uri also exports the variable, which would make the next pipeline run
    in the same process log into this workdir's store instead of its own.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@contextlib.contextmanager
def stage_run(stage: str, config_hash: str) -> Iterator[str]:
    import mlflow

    parent = mlflow.active_run()
    experiment_id = parent.info.experiment_id if parent else None
    with mlflow.start_run(run_name=stage, nested=True, experiment_id=experiment_id,
                          tags={KIND_TAG: "stage", "stage": stage,
                                "config_hash": config_hash}) as run, _ended_on_failure():
        yield run.info.run_id


@contextlib.contextmanager
def setting_run(name: str, params: dict[str, Any]) -> Iterator[str | None]:
    """One setting of a sweep as a run nested in the active one (none active: nothing logged);
    what the stages inside it log lands in it."""
    import mlflow

    if not _active():
        yield None
        return
    parent = mlflow.active_run()
    assert parent is not None  # _active() said there is one
    with mlflow.start_run(run_name=name, nested=True, experiment_id=parent.info.experiment_id,
                          tags={KIND_TAG: "setting"}) as run, _ended_on_failure():
        log_params(params)
        yield run.info.run_id


_MODEL_CODE = Path(__file__).parents[1] / "mlflow_models"  # the files load_model executes
_MODEL_PACKAGES = ("torch", "torchvision", "diffusers", "safetensors", "numpy", "pandas", "mlflow")


def _requirements() -> list[str]:
    """Pinned to this environment: MLflow would otherwise infer them by loading the model in a
    subprocess; gammaface itself is named as the package the model code imports."""
    from importlib.metadata import PackageNotFoundError, version

    pins = [f"{p}=={version(p)}" for p in _MODEL_PACKAGES]
    try:
        return pins + [f"gammaface=={version('gammaface')}"]
    except PackageNotFoundError:  # run from an uploaded checkout that was never installed
        return pins + ["gammaface"]


def register_labeller(folder: str, files: list[str], image_size: int, attributes: list[str],
                      registered: str) -> str | None:
    """Log the classifier (`files` of `folder`) as a pyfunc model from code (no pickle) and
    register it as `registered`; returns the model's URI (none: no active run)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    outputs: list[ColSpec | TensorSpec] = [*(ColSpec("string", a) for a in attributes),
                                           *(ColSpec("float", f"{a}_conf") for a in attributes)]
    signature = ModelSignature(Schema([TensorSpec(np.dtype(np.uint8), (-1, image_size, image_size, 3))]),
                               Schema(outputs))
    return _log_model("labeller", {"classifier": (folder, files)}, signature, registered)


def register_ddpm(folder: str, files: list[str], resolution: int, registered: str) -> str | None:
    """Log the DDPM pipeline folder as a pyfunc model from code (no pickle): a `seed` per row
    in, one image per row out; `steps` a param."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    signature = ModelSignature(
        Schema([ColSpec("long", "seed")]),
        Schema([TensorSpec(np.dtype(np.uint8), (-1, resolution, resolution, 3))]),
        params=ParamSchema([ParamSpec("steps", "long", 50)]))
    return _log_model("ddpm", {"ddpm": (folder, files)}, signature, registered)


def registered_name(cfg: Config, kind: str) -> str:
    """The registry name of a config's `ddpm` or `labeller`: one model, a version per run."""
    return f"{cfg.name}-{kind}"


def _log_model(kind: str, artifacts: dict[str, tuple[str, list[str]]], signature: Any, registered: str
               ) -> str | None:
    import shutil
    import tempfile

    import mlflow

    if not _active():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        # only the model's own files: the stage folder also holds Ray Train checkpoints
        staged = {}
        for key, (folder, names) in artifacts.items():
            dest = Path(tmp) / key
            dest.mkdir()
            for name in names:
                src = Path(folder) / name
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
            staged[key] = str(dest)
        info = mlflow.pyfunc.log_model(name=kind, python_model=str(_MODEL_CODE / f"{kind}.py"),
                                       artifacts=staged, signature=signature,
                                       pip_requirements=_requirements(),
                                       registered_model_name=registered)
    return info.model_uri


def _active() -> bool:
    """Whether a run is active: logging outside one (`gammaface gmm sweep` runs stages without
    a pipeline run) is skipped rather than starting a stray run, as mlflow's own calls would."""
    import mlflow

    return mlflow.active_run() is not None


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    if not _active():
        return
    clean = {k: (str(v)[:_MAX_PARAM_LEN] if v is not None else "None") for k, v in params.items()}
    mlflow.log_params(clean)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    if not _active():
        return
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: str, artifact_path: str | None = None) -> None:
    import mlflow

    if _active():
        mlflow.log_artifact(path, artifact_path=artifact_path)


def log_artifacts(folder: str, artifact_path: str | None = None) -> None:
    import mlflow

    if _active():
        mlflow.log_artifacts(folder, artifact_path=artifact_path)


def log_dataset(df: Any, source: str, name: str, context: str) -> None:
    """The table a run read, as an MLflow dataset input: its digest (of the rows), source,
    schema and row count, so the run says what it was made from."""
    import mlflow

    if not _active():
        return
    import warnings

    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():  # a local path matches two equivalent source types
        warnings.filterwarnings("ignore", message="The specified dataset source")
        dataset = from_pandas(df, source=source, name=name)
    mlflow.log_input(dataset, context=context)


def log_text(text: str, name: str) -> None:
    import mlflow

    if _active():
        mlflow.log_text(text, name)


@dataclass(frozen=True)
class ChildRun:
    """A unit of a stage's work with an MLflow run of its own (a downstream job): its name,
    the run an earlier run of the stage made for it (None: none yet), and the tags and
    params a new run gets."""

    name: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def child_runs(units: list[ChildRun], kind: str) -> list[str]:
    """One run per unit, nested under the active (stage) run and tagged with the pipeline run
    and `kind`; a unit whose recorded run the store still holds keeps it (a resumed stage
    adopts it, with its training curve), and gets a new one otherwise (another store, or
    deleted). Returns the run ids in order; none without an active run."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        return []
    client = mlflow.MlflowClient()
    pipeline_run = parent.data.tags.get("mlflow.parentRunId", parent.info.run_id)
    ids = []
    for unit in units:
        run_id = unit.run_id
        if run_id:
            try:
                client.get_run(run_id)
            except mlflow.exceptions.MlflowException:
                run_id = None
        if run_id:
            client.set_tag(run_id, "mlflow.parentRunId", parent.info.run_id)
            client.set_tag(run_id, PIPELINE_TAG, pipeline_run)
            ids.append(run_id)
            continue
        run = client.create_run(parent.info.experiment_id, run_name=unit.name, tags={
            "mlflow.parentRunId": parent.info.run_id, KIND_TAG: kind, PIPELINE_TAG: pipeline_run,
            **unit.tags})
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v))
                                                  for k, v in unit.params.items()])
        ids.append(run.info.run_id)
    return ids


def finish_child_run(run_id: str, metrics: dict[str, float], files: list[str]) -> None:
    """Log a child run's final metrics (the finite ones, stamped now: a 0 timestamp reads as
    1970 in the UI) and files, and end it as finished."""
    import math
    import time

    import mlflow

    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, now, 0)
                                      for k, v in metrics.items() if math.isfinite(v)])
    for path in files:
        client.log_artifact(run_id, path)
    client.set_terminated(run_id)


def active_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None


class WorkerRun:
    """An existing MLflow run, logged to from inside a Ray Train worker: Ray Train V2 has no
    MLflow callback, so the driver hands each training loop one of these in its config. It
    pickles as its URI and run id; the client is made in the worker on first use. Without a
    run id every call does nothing."""

    def __init__(self, uri: str | None = None, run_id: str | None = None) -> None:
        self.uri, self.run_id = uri, run_id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "run_id": self.run_id, "_client": None}

    def for_run(self, run_id: str | None) -> WorkerRun:
        """The same store, another run (a downstream job's own)."""
        return WorkerRun(self.uri, run_id)

    def _ready(self) -> bool:
        if not (self.uri and self.run_id):
            return False
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return True

    def metrics(self, values: dict[str, float], step: int) -> None:
        if not self._ready():
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                     for k, v in values.items()])

    def image(self, array: Any, name: str, step: int | None = None) -> None:
        """A sample grid: with a step, through MLflow's image logging (`key` = `name`, shown
        as a series over steps in the UI); without one, as the artifact `samples/<name>`."""
        if not self._ready():
            return
        if step is not None:
            self._client.log_image(self.run_id, array, key=name, step=step)
            return
        import tempfile
        from pathlib import Path

        from gammaface.common.images import encode_png

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            path.write_bytes(encode_png(array))
            self._client.log_artifact(self.run_id, str(path), artifact_path="samples")


def _refuse_missing_store(uri: str | None) -> None:
    """A store that is only read must exist: MLflow would create an empty one (and its folder)
    at a mistyped SQLite or file path and then report nothing found."""
    if not uri:
        return
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not os.path.isfile(path):
            raise UserError(f"no MLflow store at {uri}: the file {path} does not exist.")
    elif uri.startswith("file:") or "://" not in uri:
        path = uri[len("file://"):] if uri.startswith("file://") else uri.removeprefix("file:")
        if not os.path.isdir(path):
            raise UserError(f"no MLflow store at {uri}: the folder {path} does not exist.")


def worker_run() -> WorkerRun:
    """The active run (the stage's), for its training workers."""
    import mlflow

    return WorkerRun(mlflow.get_tracking_uri(), active_run_id())


def downstream_runs(experiment: str | None = None, run_id: str | None = None,
                    tracking_uri: str | None = None, workdir: str | None = None) -> Any:
    """One row per downstream job: its tags as columns and its metrics by their names. With a
    run id, the jobs of that pipeline run (or that downstream stage run); else the jobs of the
    experiment's most recent pipeline run that has any, among the pipeline runs of `workdir`
    where one is named (workdirs that share a tracking store share its experiments)."""
    import mlflow
    import pandas as pd

    _refuse_missing_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    if run_id:
        try:
            exp_ids = [client.get_run(run_id).info.experiment_id]
        except mlflow.exceptions.MlflowException:
            raise UserError(f"MLflow has no run {run_id}.") from None
    else:
        exp = client.get_experiment_by_name(experiment or "gammaface")
        if exp is None:
            raise UserError(f"MLflow has no experiment {experiment!r}.")
        exp_ids = [exp.experiment_id]
    runs = []
    token = None
    while True:
        page = client.search_runs(exp_ids, DOWNSTREAM_FILTER, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    if run_id:
        runs = [r for r in runs if run_id in (r.data.tags.get(PIPELINE_TAG),
                                              r.data.tags.get("mlflow.parentRunId"))]
    elif workdir is not None:
        # the pipeline runs that ran in this workdir, by the tag each one carries (read run by
        # run: a path may hold any character a filter string would have to escape)
        parents = {p for r in runs if (p := r.data.tags.get(PIPELINE_TAG))}
        mine = {p for p in parents if client.get_run(p).data.tags.get(WORKDIR_TAG) == workdir}
        runs = [r for r in runs if r.data.tags.get(PIPELINE_TAG) in mine]
    if runs and not run_id:
        latest = max(runs, key=lambda r: r.info.start_time)
        runs = [r for r in runs if r.data.tags.get(PIPELINE_TAG)
                == latest.data.tags.get(PIPELINE_TAG)]
    if not runs:
        where = (f" under run {run_id}" if run_id else f" in experiment {experiment!r}"
                 + (f" for workdir {workdir}" if workdir is not None else ""))
        raise UserError(f"no downstream runs found{where}.")
    rows = []
    for r in runs:
        t = r.data.tags
        # runs from before the mixing rules were named all held the training set's size fixed
        rows.append({"run_id": r.info.run_id, "method": t["method"],
                     "mixing": t.get("mixing", "replace"), "ratio": float(t["ratio"]),
                     "seed": int(t["seed"]), "n_per_class": int(t["n_per_class"]),
                     "target": t["target"], "protected": t["protected"], **r.data.metrics})
    return pd.DataFrame(rows)


