"""Stage `downstream`: real + generated training sets -> one classifier D per (size, method,
ratio, seed), each evaluated on the real test split -> `downstream/<target>/n<N>/<method>/
<ratio>/seed<s>/` (train.parquet, predictions.parquet, metrics.json) and `results.csv`.

Every job is a nested MLflow run under this stage's run, tagged method, ratio, seed, target,
protected and n_per_class, with its metrics (accuracy, TPR, Bias, BA raw and x100, KL
reference and fixed range, DEO, per-group TPR, and BPC against the baseline of the same seed
and size) and its predictions. Training runs in one TorchTrainer whose workers share out the
jobs; evaluation runs in the driver once every job has its predictions.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from gammaface import layout, ray_train, tracking
from gammaface.config import Config
from gammaface.data import manifest, registry
from gammaface.downstream.mixing import BASELINE, Job, job_key, jobs, mix
from gammaface.downstream.train_loop import PREDICTIONS, TRAIN_TABLE, train_loop_per_worker
from gammaface.errors import UserError
from gammaface.metrics.evaluate import INTERSECTION_SEP, evaluate
from gammaface.ray_runtime import connect
from gammaface.stage import StageContext, StageResult
from gammaface.storage import Store

JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
KIND = "downstream"
RAY_TRAIN_DIR = "ray_train"


def _labelled_sets(cfg: Config, labels: Store) -> dict[str, tuple[pd.DataFrame, str]]:
    out = {}
    for method in cfg.downstream.methods:
        if method == BASELINE:
            continue
        if method not in cfg.generate.methods:
            raise UserError(f"downstream.methods names {method!r}, which generate.methods does "
                            "not make; add it there or drop it here.")
        out[method] = manifest.read(labels.path(method, manifest.MANIFEST_FILE))
    return out


def _job_record(job: Job, key: str) -> dict[str, Any]:
    return {"key": key, "n_per_class": job.n_per_class, "method": job.method, "ratio": job.ratio,
            "seed": job.seed}


def _relative_files(table: pd.DataFrame, workdir: Store) -> pd.DataFrame:
    """Image files under the workdir are stored relative to it, so a copied or moved workdir
    trains from its own copy; images of a dataset kept elsewhere stay where the config says."""
    root = workdir.path().rstrip("/") + "/"
    files = table["file"].astype(str)
    inside = files.str.startswith(root)
    return table.assign(file=np.where(inside, files.str.slice(len(root)), files))


def _prepare_jobs(ctx: StageContext, out: Store, key: Callable[[Job], str]
                  ) -> tuple[list[Job], dict[Job, dict[str, int]]]:
    """Write every job's training table (and job.json); a job folder written for another config
    is cleared first. Returns the jobs and the counts each actually uses."""
    cfg, workdir = ctx.cfg, ctx.workdir
    d = cfg.downstream
    df, real_root = manifest.read(ctx.manifest_path)
    real = df[(df["split"] == "train") & df[d.target].notna()].reset_index(drop=True)
    generated = _labelled_sets(cfg, ctx.folder("pseudo_label"))
    all_jobs = jobs(d.n_per_class, d.methods, d.ratios, d.seeds)
    counts = {}
    for job in all_jobs:
        folder = out.sub(job.folder)
        record = _job_record(job, key(job))
        stored = folder.read_json(JOB_FILE) if folder.exists(JOB_FILE) else {}
        if any(stored.get(k) != v for k, v in record.items()):
            folder.delete("")  # written for another config (or never finished writing)
            stored = {}
        gen, gen_root = generated.get(job.method, (None, None))
        table, used = mix(job, d.target, real, real_root, gen, gen_root, cfg.label.min_confidence)
        if not folder.exists(TRAIN_TABLE):
            folder.write_parquet(TRAIN_TABLE, _relative_files(table, workdir))
        folder.write_json(JOB_FILE, {**stored, **record})  # keeps the job's MLflow run id
        counts[job] = used
    return all_jobs, counts


def _child_runs(cfg: Config, all_jobs: list[Job], out: Store) -> dict[Job, str]:
    """One nested MLflow run per job under the stage's run, reused when the stage resumes."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        return {}
    client = mlflow.MlflowClient()
    pipeline_run = parent.data.tags.get("mlflow.parentRunId", parent.info.run_id)
    ids = {}
    for job in all_jobs:
        folder = out.sub(job.folder)
        rec = folder.read_json(JOB_FILE)
        run_id = rec.get("run_id")
        if run_id:
            try:
                client.get_run(run_id)
            except mlflow.exceptions.MlflowException:
                run_id = None  # another store, or deleted: make a new one
        if run_id:
            # a resumed stage adopts the job's run, with its training curve, as its own child
            client.set_tag(run_id, "mlflow.parentRunId", parent.info.run_id)
            client.set_tag(run_id, tracking.PIPELINE_TAG, pipeline_run)
            ids[job] = run_id
            continue
        run = client.create_run(parent.info.experiment_id, run_name=job.name, tags={
            "mlflow.parentRunId": parent.info.run_id, tracking.KIND_TAG: KIND,
            tracking.PIPELINE_TAG: pipeline_run,
            "method": job.method, "ratio": f"{job.ratio:g}", "seed": str(job.seed),
            "n_per_class": str(job.n_per_class), "target": cfg.downstream.target,
            "protected": ",".join(cfg.downstream.protected)})
        client.log_batch(run.info.run_id, params=[
            mlflow.entities.Param(k, str(v)) for k, v in {
                "method": job.method, "ratio": job.ratio, "seed": job.seed,
                "n_per_class": job.n_per_class, "target": cfg.downstream.target,
                "protected": ",".join(cfg.downstream.protected),
                "backbone": cfg.downstream.backbone, "epochs": cfg.downstream.epochs}.items()])
        ids[job] = run.info.run_id
        folder.write_json(JOB_FILE, {**rec, "run_id": run.info.run_id})
    return ids


def _test_table(cfg: Config, manifest_path: str) -> pd.DataFrame:
    d = cfg.downstream
    df, root = manifest.read(manifest_path)
    cols = [d.target, *d.protected]
    test = df[(df["split"] == "test") & df[cols].notna().all(axis=1)].reset_index(drop=True)
    if test.empty:
        raise UserError("the test split has no image with the target and every protected "
                        "attribute labelled.")
    classes = registry.get(d.target).classes
    return pd.DataFrame({"file": [f"{root}/{p}" for p in test["path"]], "path": test["path"],
                         "label": test[d.target].map(classes.index).astype(int),
                         **{a: test[a].astype(str) for a in d.protected}})


def _evaluate_job(cfg: Config, pred: pd.DataFrame, baseline: dict[str, float] | None
                 ) -> dict[str, float]:
    d = cfg.downstream
    binary = registry.get(d.target).n_classes == 2
    scores = pred["prob_1"].to_numpy() if binary else None
    return evaluate(pred["y_true"].to_numpy(), pred["y_pred"].to_numpy(), scores,
                    {a: pred[a].to_numpy() for a in d.protected}, baseline)


def run(ctx: StageContext) -> StageResult:
    import mlflow

    cfg, workdir = ctx.cfg, ctx.workdir
    d = cfg.downstream
    connect(cfg.ray)
    out = ctx.local_out("trains from local files").sub(d.target)
    key = ctx.hash

    def keyed(job: Job) -> str:
        return job_key(cfg, job, ctx.hash_of)

    all_jobs, counts = _prepare_jobs(ctx, out, keyed)
    run_ids = _child_runs(cfg, all_jobs, out)
    pending = [j for j in all_jobs if not out.sub(j.folder).exists(PREDICTIONS)]
    ctx.echo(f"  {len(all_jobs)} downstream jobs ({len(pending)} to train): target {d.target}, "
          f"protected {', '.join(d.protected)}; counts per class of the first: "
          + ", ".join(f"{k} {v}" for k, v in counts[all_jobs[0]].items()))
    test = _test_table(cfg, ctx.manifest_path)
    if pending:
        workers = max(1, min(d.num_workers, len(pending)))
        threads = ray_train.cpus_per_worker(None, d.use_gpu, workers)
        loop_cfg = {
            "target": d.target, "protected": list(d.protected), "backbone": d.backbone,
            "image_size": cfg.classifier_image_size, "epochs": d.epochs, "batch_size": d.batch_size,
            "learning_rate": d.learning_rate, "use_gpu": d.use_gpu, "threads": threads,
            "out": out.path(), "workdir": workdir.path(), "test": test.to_dict(orient="list"),
            "log": tracking.worker_run(),
            "jobs": [{"folder": j.folder, "seed": j.seed, "name": j.name,
                      "run_id": run_ids.get(j)} for j in pending],
        }
        ray_train.fit(train_loop_per_worker, loop_cfg, num_workers=workers, use_gpu=d.use_gpu,
                      cpus_per_worker=threads, storage_path=out.path(RAY_TRAIN_DIR),
                      name=f"downstream-{key}", max_failures=d.max_failures, what="downstream",
                      checkpointed=False)

    rows, baselines = [], {}
    for job in sorted(all_jobs, key=lambda j: j.method != BASELINE):  # baselines first
        folder = out.sub(job.folder)
        pred, _ = folder.read_parquet(PREDICTIONS)
        base = baselines.get((job.n_per_class, job.seed)) if job.method != BASELINE else None
        metrics = _evaluate_job(cfg, pred, base)
        if job.method == BASELINE:
            baselines[(job.n_per_class, job.seed)] = metrics
        folder.write_json(METRICS_FILE, {"job": _job_record(job, keyed(job)),
                                         "counts": counts[job],
                                         "metrics": metrics})
        if job in run_ids:
            client = mlflow.MlflowClient()
            finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
            client.log_batch(run_ids[job], metrics=[
                mlflow.entities.Metric(k, float(v), 0, 0) for k, v in finite.items()])
            client.log_artifact(run_ids[job], folder.path(PREDICTIONS))
            client.log_artifact(run_ids[job], folder.path(METRICS_FILE))
            client.set_terminated(run_ids[job])
        rows.append({"n_per_class": job.n_per_class, "method": job.method, "ratio": job.ratio,
                     "seed": job.seed, **{f"count/{k}": v for k, v in counts[job].items()},
                     **metrics})
    results = pd.DataFrame(rows)
    out.write_bytes(layout.DOWNSTREAM_RESULTS, results.to_csv(index=False).encode())
    tracking.log_artifact(out.path(layout.DOWNSTREAM_RESULTS))
    pk = INTERSECTION_SEP.join(d.protected)
    summary = results.groupby(["n_per_class", "method", "ratio"])[["accuracy", f"bias/{pk}"]].mean()
    ctx.echo("  mean over seeds (accuracy, bias/" + pk + "):\n" + summary.round(4).to_string())
    tracking.log_metrics({"jobs": float(len(all_jobs))})
    return StageResult("downstream", rows={"jobs": len(all_jobs), "trained": len(pending)},
                       outputs={"results": out.uri(layout.DOWNSTREAM_RESULTS)})
