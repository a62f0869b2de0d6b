"""Stage `downstream`: real + generated training sets -> one classifier D per (size, arm,
ratio, seed), each scored on the evaluation set (`downstream.eval`) -> `downstream/<target>/
n<N>/<arm>/<ratio>/seed<s>/` (train.parquet, predictions.parquet, metrics.json), the evaluation
set under `downstream/<target>/eval/`, `results.csv` and the comparison (compare.md/csv).

Every job is a nested MLflow run under this stage's run, tagged method, mixing, ratio, seed,
target, protected and n_per_class, with its metrics (accuracy, TPR, worst-group TPR, Bias, BA
raw and x100, KL reference and fixed range, DEO, per-group TPR, BPC against the baseline of the
same seed and size), its differences to that baseline (`delta/...`, with paired bootstrap
bounds over the evaluation images), the count of every evaluation cell (`eval_n/...`) and its
predictions. Every job trains in its own Ray task (`gammaface.distributed.tasks`: handed out as the
cluster frees up, a failed job retried alone); evaluation runs in the driver once every job has
its predictions.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from gammaface.run import layout, tracking
from gammaface.distributed import tasks as ray_tasks, train as ray_train
from gammaface.config import Config
from gammaface.data import manifest, registry, synthfaces
from gammaface.data.cells import cell_codes, cells, equal_cells
from gammaface.data.synthfaces_spec import DEFAULT_SPEC, Spec
from gammaface.downstream import compare
from gammaface.downstream.arms import Pools
from gammaface.downstream.mixing import BASELINE, Job, job_key, jobs, mix
from gammaface.downstream.train_loop import PREDICTIONS, TRAIN_TABLE, train_job
from gammaface.common.errors import UserError
from gammaface.common.images import load_resized
from gammaface.metrics.evaluate import INTERSECTION_SEP, evaluate
from gammaface.distributed.runtime import connect
from gammaface.common.seeds import seed_of
from gammaface.run.stage import StageContext, StageResult
from gammaface.storage.store import Store

JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
KIND = "downstream"
EVAL_DIR = "eval"
EVAL_RECORD = "eval.json"


def _labelled_sets(cfg: Config, labels: Store) -> dict[str, tuple[pd.DataFrame, str]]:
    out: dict[str, tuple[pd.DataFrame, str]] = {}
    for job in jobs([1], cfg.downstream.methods, cfg.downstream.ratios, 1, cfg.downstream.mixing):
        method = job.generated_set
        if method is None or method in out:
            continue
        if method not in cfg.generate.methods:
            raise UserError(f"downstream.methods names {method!r}, which generate.methods does "
                            "not make; add it there or drop it here.")
        out[method] = manifest.read(labels.path(method, manifest.MANIFEST_FILE))
    return out


def _job_record(job: Job, key: str) -> dict[str, Any]:
    return {"key": key, "n_per_class": job.n_per_class, "method": job.method,
            "mixing": job.mixing, "ratio": job.ratio, "seed": job.seed}


def _relative_files(table: pd.DataFrame, workdir: Store) -> pd.DataFrame:
    """Image files under the workdir are stored relative to it, so a copied or moved workdir
    trains from its own copy; images of a dataset kept elsewhere stay where the config says."""
    root = workdir.path().rstrip("/") + "/"
    files = table["file"].astype(str)
    inside = files.str.startswith(root)
    return table.assign(file=np.where(inside, files.str.slice(len(root)), files))


def _prepare_jobs(ctx: StageContext, out: Store, key: Callable[[Job], str]
                  ) -> tuple[list[Job], dict[Job, dict[str, float]]]:
    """Write every job's training table (and job.json); a job folder written for another config
    is cleared first. Returns the jobs and the counts each actually uses."""
    cfg, workdir = ctx.cfg, ctx.workdir
    d = cfg.downstream
    df, real_root = manifest.read(ctx.manifest_path)
    real = df[(df["split"] == "train") & df[d.target].notna()].reset_index(drop=True)
    generated = _labelled_sets(cfg, ctx.folder("pseudo_label"))
    all_jobs = jobs(d.n_per_class, d.methods, d.ratios, d.seeds, d.mixing)
    counts: dict[Job, dict[str, float]] = {}
    for job in all_jobs:
        folder = out.sub(job.folder)
        record = _job_record(job, key(job))
        stored = folder.read_json(JOB_FILE) if folder.exists(JOB_FILE) else {}
        if any(stored.get(k) != v for k, v in record.items()):
            folder.delete("")  # written for another config (or never finished writing)
            stored = {}
        gen, gen_root = generated.get(job.generated_set or "", (None, None))
        table, used = mix(job, d.target, list(d.protected), Pools(real, real_root, gen, gen_root),
                          cfg.label.min_confidence)
        if not folder.exists(TRAIN_TABLE):
            folder.write_parquet(TRAIN_TABLE, _relative_files(table, workdir))
        folder.write_json(JOB_FILE, {**stored, **record})  # keeps the job's MLflow run id
        counts[job] = used
    return all_jobs, counts


def _upstream_params(ctx: StageContext) -> dict[str, str]:
    """The settings upstream of the generated sets that a comparison is grouped by (as
    `params.upstream.k` in mlflow.search_runs): harvest source and t*, mixture space and K,
    how components are drawn."""
    sel = ctx.folder("gmm_search").read_json(layout.GMM_SELECTED)
    return {"upstream.source": str(sel["source"]), "upstream.t_star": str(sel["t_star"]),
            "upstream.space": str(sel["space"]), "upstream.k": str(sel["k"]),
            "upstream.draw": ctx.cfg.generate.draw}


def _child_runs(cfg: Config, all_jobs: list[Job], out: Store, upstream: dict[str, str]
                ) -> dict[Job, str]:
    """One nested MLflow run per job under the stage's run, reused when the stage resumes (its
    id is kept in the job's record)."""
    d = cfg.downstream
    records = [out.sub(job.folder).read_json(JOB_FILE) for job in all_jobs]
    described = [{"method": job.method, "mixing": job.mixing, "ratio": job.ratio, "seed": job.seed,
                  "n_per_class": job.n_per_class, "target": d.target,
                  "protected": ",".join(d.protected)} for job in all_jobs]
    units = [tracking.ChildRun(job.name, rec.get("run_id"),
                               tags={**{k: str(v) for k, v in about.items()}, "ratio": f"{job.ratio:g}"},
                               params={**about, "backbone": d.backbone, "epochs": d.epochs, **upstream})
             for job, rec, about in zip(all_jobs, records, described)]
    ids = tracking.child_runs(units, KIND)
    for job, rec, run_id in zip(all_jobs, records, ids):
        if rec.get("run_id") != run_id:
            out.sub(job.folder).write_json(JOB_FILE, {**rec, "run_id": run_id})
    return dict(zip(all_jobs, ids))


def _eval_rows(ctx: StageContext, out: Store) -> tuple[pd.DataFrame, str]:
    """The manifest rows every job is scored on and their image root: a fresh SynthFaces render
    with equal cells (kept while its settings stay), or the real dataset's test split, cut to
    equal cells when `downstream.eval.balance` asks."""
    cfg = ctx.cfg
    d, e = cfg.downstream, cfg.downstream.eval
    attributes = [d.target, *d.protected]
    if cfg.data.dataset == "synthfaces":
        s = cfg.data.synthfaces
        folder = out.sub(EVAL_DIR)
        record = {"key": cfg.section_hash("data.synthfaces", "downstream.eval", "downstream.target",
                                          "downstream.protected")}
        if not (folder.exists(EVAL_RECORD) and folder.read_json(EVAL_RECORD) == record
                and folder.exists(manifest.MANIFEST_FILE)):
            folder.delete("")
            spec = Spec.from_yaml(s.spec) if s.spec else Spec(DEFAULT_SPEC)
            ctx.echo(f"  rendering the evaluation set: {e.n_per_cell} images in each of the "
                     f"{len(cells(attributes))} cells of {', '.join(attributes)} (seed {e.seed})")
            synthfaces.build_eval(folder.uri(), attributes, e.n_per_cell, s.size, e.seed, spec)
            folder.write_json(EVAL_RECORD, record)
        return manifest.read(folder.path(manifest.MANIFEST_FILE))
    df, root = manifest.read(ctx.manifest_path)
    test = df[(df["split"] == "test") & df[attributes].notna().all(axis=1)]
    if e.balance:
        test = equal_cells(test, attributes, e.n_per_cell, e.seed)
    return test, root


def _test_table(cfg: Config, rows: pd.DataFrame, root: str) -> pd.DataFrame:
    d = cfg.downstream
    test = rows[rows[[d.target, *d.protected]].notna().all(axis=1)].reset_index(drop=True)
    if test.empty:
        raise UserError("the test split has no image with the target and every protected "
                        "attribute labelled.")
    classes = registry.get(d.target).classes
    return pd.DataFrame({"file": [f"{root}/{p}" for p in test["path"]], "path": test["path"],
                         "label": test[d.target].map(classes.index).astype(int),
                         **{a: test[a].astype(str) for a in d.protected}})


def _eval_counts(test: pd.DataFrame, target: str, protected: list[str]) -> dict[str, float]:
    """`eval_n/<class>/<cell>`: how many evaluation images each target x protected cell holds."""
    classes = registry.get(target).classes
    frame = test.assign(**{target: np.asarray(classes, dtype=object)[test["label"].to_numpy()]})
    codes = cell_codes(frame, [target, *protected])
    found = np.bincount(codes[codes >= 0], minlength=len(cells([target, *protected])))
    return {f"eval_n/{c[0]}/{':'.join(c[1:])}": float(k)
            for c, k in zip(cells([target, *protected]), found)}


def _bias_directions(ctx: StageContext) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The real training split's target and protected labels: where BA reads which way each
    group is tied to each class (the evaluation set, with equal cells, ties none)."""
    d = ctx.cfg.downstream
    df, _ = manifest.read(ctx.manifest_path)
    train = df[(df["split"] == "train") & df[[d.target, *d.protected]].notna().all(axis=1)]
    classes = registry.get(d.target).classes
    return (train[d.target].map(classes.index).to_numpy(dtype=np.int64),
            {a: train[a].astype(str).to_numpy() for a in d.protected})


def _evaluate_job(cfg: Config, pred: pd.DataFrame, baseline: dict[str, float] | None,
                  directions: tuple[np.ndarray, dict[str, np.ndarray]]) -> dict[str, float]:
    d = cfg.downstream
    binary = registry.get(d.target).n_classes == 2
    scores = pred["prob_1"].to_numpy() if binary else None
    return evaluate(pred["y_true"].to_numpy(), pred["y_pred"].to_numpy(), scores,
                    {a: pred[a].to_numpy() for a in d.protected}, baseline, train=directions)


def _train(ctx: StageContext, out: Store, test: pd.DataFrame, pending: list[Job],
           run_ids: dict[Job, str]) -> None:
    """Every pending job in its own Ray task, at most `num_workers` at once."""
    cfg, d = ctx.cfg, ctx.cfg.downstream
    at_once = max(1, min(d.num_workers, len(pending)))
    threads = ray_train.cpus_per_worker(None, d.use_gpu, at_once)
    shared = {
        "target": d.target, "protected": list(d.protected), "backbone": d.backbone,
        "image_size": cfg.classifier_image_size, "epochs": d.epochs, "batch_size": d.batch_size,
        "learning_rate": d.learning_rate, "use_gpu": d.use_gpu, "threads": threads,
        "out": out.path(), "workdir": ctx.workdir.path(), "test": test,
        # read once here, shared by every task through the object store
        "test_images": load_resized("/", list(test["file"]), cfg.classifier_image_size),
        "log": tracking.worker_run(),
    }
    items = [{"folder": j.folder, "seed": j.seed, "name": j.name, "run_id": run_ids.get(j)}
             for j in pending]
    started, finished = time.perf_counter(), []

    def done(item: dict[str, Any], result: dict[str, Any]) -> None:
        finished.append(item)
        left = len(items) - len(finished)
        eta = (time.perf_counter() - started) / len(finished) * left
        accuracy = "" if result["accuracy"] is None else f"accuracy {result['accuracy']:.3f} "
        ctx.echo(f"  [downstream] {len(finished)}/{len(items)} {item['name']}: {accuracy}"
                 f"in {result['seconds']:.0f} s, ETA {eta:.0f} s")

    slot = ray_tasks.Slot(num_cpus=threads, num_gpus=d.gpus_per_job if d.use_gpu else 0.0,
                          resources=cfg.ray.placed("downstream"))
    ray_tasks.run_each(train_job, items, shared=shared, name=lambda item: f"downstream {item['name']}",
                       slot=slot, max_retries=d.max_failures, concurrency=at_once, on_done=done)


def _score(ctx: StageContext, out: Store, all_jobs: list[Job], counts: dict[Job, dict[str, float]],
           scored: dict[str, float]) -> pd.DataFrame:
    """Every job's metrics on the evaluation set, each generated arm paired with its seed's
    baseline (bootstrap intervals of the differences)."""
    d = ctx.cfg.downstream
    directions = _bias_directions(ctx)
    ordered = sorted(all_jobs, key=lambda j: j.method != BASELINE)  # baselines first
    metrics = compare.paired_scores(
        [((j.n_per_class, j.seed), j.method == BASELINE, out.sub(j.folder).read_parquet(PREDICTIONS)[0],
          seed_of(j.seed, j.n_per_class, 11)) for j in ordered],
        lambda pred, base: _evaluate_job(ctx.cfg, pred, base, directions),
        list(d.protected), registry.get(d.target).n_classes == 2)
    rows = [{"n_per_class": job.n_per_class, "method": job.method, "mixing": job.mixing,
             "ratio": job.ratio, "seed": job.seed, **{f"count/{k}": v for k, v in counts[job].items()},
             **scored, **m} for job, m in zip(ordered, metrics)]
    results = pd.DataFrame(rows)
    results["target"], results["protected"] = d.target, ",".join(d.protected)
    _, kl = compare.protected_columns(results)
    key_names = INTERSECTION_SEP.join(d.protected)
    return compare.with_differences(results, list(compare.paired_columns(key_names, kl).values()))


def _record_jobs(out: Store, all_jobs: list[Job], results: pd.DataFrame,
                 counts: dict[Job, dict[str, float]], run_ids: dict[Job, str],
                 keyed: Callable[[Job], str]) -> None:
    """Each job's metrics file, and its MLflow run finished with them."""
    by_job = {(r["n_per_class"], r["method"], r["ratio"], r["seed"]): r
              for r in results.to_dict("records")}
    for job in all_jobs:
        folder = out.sub(job.folder)
        r = by_job[(job.n_per_class, job.method, job.ratio, job.seed)]
        metrics = {k: float(v) for k, v in r.items()
                   if isinstance(v, (int, float)) and not k.startswith("count/")
                   and k not in ("n_per_class", "ratio", "seed")}
        folder.write_json(METRICS_FILE, {"job": _job_record(job, keyed(job)), "counts": counts[job],
                                         "metrics": metrics})
        if job in run_ids:
            tracking.finish_child_run(run_ids[job], metrics,
                                      [folder.path(PREDICTIONS), folder.path(METRICS_FILE)])


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    d = cfg.downstream
    connect(cfg.ray)
    out = ctx.local_out("trains from local files").sub(d.target)

    def keyed(job: Job) -> str:
        return job_key(cfg, job, ctx.input_hash)

    all_jobs, counts = _prepare_jobs(ctx, out, keyed)
    run_ids = _child_runs(cfg, all_jobs, out, _upstream_params(ctx))
    pending = [j for j in all_jobs if not out.sub(j.folder).exists(PREDICTIONS)]
    ctx.echo(f"  {len(all_jobs)} downstream jobs ({len(pending)} to train): target {d.target}, "
          f"protected {', '.join(d.protected)}; counts per class of the first: "
          + ", ".join(f"{k} {v}" for k, v in counts[all_jobs[0]].items()))
    test = _test_table(cfg, *_eval_rows(ctx, out))
    if pending:
        _train(ctx, out, test, pending, run_ids)

    key_names = INTERSECTION_SEP.join(d.protected)
    scored = _eval_counts(test, d.target, list(d.protected))
    results = _score(ctx, out, all_jobs, counts, scored)
    _record_jobs(out, all_jobs, results, counts, run_ids, keyed)
    out.write_bytes(layout.DOWNSTREAM_RESULTS, results.to_csv(index=False).encode())
    tracking.log_artifact(out.path(layout.DOWNSTREAM_RESULTS))
    summary = compare.summarise(results)
    compare.write(summary, d.target, key_names, out)
    for name in (compare.TABLE_FILE, compare.CSV_FILE, compare.PLOT_FILE):
        tracking.log_artifact(out.path(name))
    ctx.echo("  evaluation cells: " + ", ".join(f"{k[len('eval_n/'):]} {v:g}"
                                                for k, v in scored.items()))
    ctx.echo(compare.markdown(summary, d.target, key_names).rstrip("\n"))
    ctx.echo("\n".join(compare.verdict(results, summary)))
    tracking.log_metrics({"jobs": float(len(all_jobs)), **scored})
    return StageResult("downstream", rows={"jobs": len(all_jobs), "trained": len(pending)},
                       outputs={"results": out.uri(layout.DOWNSTREAM_RESULTS)})
