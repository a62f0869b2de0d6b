"""Stage `pseudo_label`: every generated set -> `labels/<method>/manifest.parquet` (the
canonical manifest of the generated images, with `<attr>` and `<attr>_conf` from the attribute
classifier) and the balance of each set (`labels/balance.json`, `.csv`, `.png`).

Nothing is filtered here: consumers apply `label.min_confidence`. Balance is the fairness
discrepancy of each protected attribute and of their intersection, with bootstrap error bars,
for every method and for the training set itself, both by its own labels and as the labeller
sees it (the difference is the labeller's own bias).
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pandas as pd

from gammaface.report import figures
from gammaface.run import layout, tracking
from gammaface.classifiers.labeller import LabelBatch, Labeller, label_frame
from gammaface.config import Config
from gammaface.data import manifest, registry
from gammaface.common.errors import UserError
from gammaface.generate.weights import set_balance
from gammaface.common.images import load_resized
from gammaface.common.progress import progress
from gammaface.distributed.runtime import actor_resources, connect, placement
from gammaface.run.stage import StageContext, StageResult
from gammaface.storage.store import Store

BALANCE_JSON = "balance.json"
TRAIN_TRUTH = "train (dataset labels)"
TRAIN_SEEN = "train (labeller)"


def _label_manifest(cfg: Config, generated: pd.DataFrame, image_root: str, classifier_dir: str
                   ) -> pd.DataFrame:
    """`generated` with label and confidence columns, in its own row order."""
    import ray

    lc = cfg.label
    cpus, threads = actor_resources(lc.concurrency, lc.num_gpus)
    frame = generated.reset_index(drop=True).assign(_row=np.arange(len(generated)))
    step = max(lc.batch_size, -(-len(frame) // 200))  # at most about 200 blocks
    ds: ray.data.Dataset = ray.data.from_pandas([frame.iloc[s:s + step] for s in range(0, len(frame), step)])
    ds = ds.map_batches(LabelBatch, batch_size=lc.batch_size, batch_format="pandas",
                        fn_constructor_kwargs=dict(classifier_dir=classifier_dir,
                                                   image_root=image_root, threads=threads,
                                                   use_gpu=lc.num_gpus > 0),
                        compute=ray.data.ActorPoolStrategy(size=lc.concurrency), num_cpus=cpus,
                        num_gpus=lc.num_gpus, **placement(cfg, "pseudo_label"))
    parts = []
    with progress(len(frame), "labelled", unit="img") as bar:
        for part in ds.iter_batches(batch_size=None, batch_format="pandas"):
            parts.append(part)
            bar.update(len(part))
    labelled = pd.concat(parts, ignore_index=True).sort_values("_row").drop(columns="_row")
    return labelled.reset_index(drop=True)


def _log(table: list[dict[str, Any]], out: Store) -> None:
    """Every set's discrepancies, and the balance files, to MLflow."""
    for r in table:
        tag = r["set"].replace(" (", "_").replace(")", "").replace(" ", "_")
        tracking.log_metrics({f"balance/{tag}/{k.split('/', 1)[1]}": v for k, v in r.items()
                              if k.startswith("discrepancy/")})
    for name in (layout.BALANCE_CSV, BALANCE_JSON, layout.BALANCE_PLOT):
        if out.is_local:
            tracking.log_artifact(out.path(name))


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    connect(cfg.ray)
    out, gen = ctx.out, ctx.folder("generate")
    classifier_dir = ctx.folder("train_classifiers").path()
    protected = list(cfg.generate.protected)
    labeller = Labeller.load(classifier_dir)
    missing = [a for a in protected if a not in labeller.attributes]
    if missing:
        raise UserError(f"generate.protected names {', '.join(missing)}, which the classifiers "
                        "were not trained for; add them to classifiers.attributes.")
    out.makedirs()
    rows: dict[str, int] = {}
    table = []
    df, image_root = manifest.read(ctx.manifest_path)
    train = df[df["split"] == "train"].reset_index(drop=True)
    seen = label_frame(labeller, load_resized(image_root, list(train["path"]), labeller.image_size),
                       train[["path"]])
    repeat, seed = cfg.label.bootstrap, cfg.seed
    table.append(set_balance(TRAIN_TRUTH, train, protected, seed, repeat))
    table.append(set_balance(TRAIN_SEEN, seen, protected, seed, repeat))
    generated = []
    for method in cfg.generate.methods:
        rel = f"{method}/{manifest.MANIFEST_FILE}"
        if not gen.exists(rel):
            raise UserError(f"{gen.uri(rel)} does not exist; run the generate stage first.")
        part, _ = gen.read_parquet(rel)
        generated.append(part.assign(path=method + "/" + part["path"].astype(str)))
    # one actor pool for every method: starting a pool costs more than labelling a small set
    labelled_all = _label_manifest(cfg, pd.concat(generated, ignore_index=True), gen.path(),
                                  classifier_dir)
    for method in cfg.generate.methods:
        labelled = labelled_all[labelled_all["method"] == method].reset_index(drop=True)
        labelled["path"] = labelled["path"].str.slice(len(method) + 1)
        labelled["split"] = "train"
        for name in registry.ATTRIBUTE_NAMES:
            if name not in labelled:
                labelled[name] = None
        # the images stay in generated/<method>; the root is stored relative to this manifest
        root = posixpath.relpath(gen.path(method), out.path(method))
        manifest.write(labelled, out.sub(method), image_root=root)
        rows[method] = len(labelled)
        table.append(set_balance(method, labelled, protected, seed, repeat))
    ctx.echo(f"  labelled {len(labelled_all)} generated images")
    frame = pd.DataFrame(table)
    out.write_bytes(layout.BALANCE_CSV, frame.to_csv(index=False).encode())
    out.write_json(BALANCE_JSON, {"protected": protected, "bootstrap": repeat,
                                  "sets": frame.to_dict(orient="records")})
    out.write_bytes(layout.BALANCE_PLOT, figures.balance_bars(frame, protected))
    key = ":".join(protected)
    _log(table, out)
    ctx.echo(f"  balance ({key} discrepancy, lower is fairer): " + ", ".join(
        f"{r['set']} {r[f'discrepancy/{key}']:.3f}±{r[f'discrepancy_std/{key}']:.3f}" for r in table))
    return StageResult("pseudo_label", rows=rows, outputs={"balance": out.uri(BALANCE_JSON)},
                       metrics={f"discrepancy/{r['set']}": r[f"discrepancy/{key}"] for r in table})
