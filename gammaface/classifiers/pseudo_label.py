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

from gammaface import layout, tracking
from gammaface.classifiers.labeller import Labeller
from gammaface.config import Config
from gammaface.data import manifest, registry
from gammaface.diffusion.images import load_resized
from gammaface.errors import UserError
from gammaface.generate.weights import cell_codes, cells
from gammaface.metrics.generation import fairness_discrepancy, fairness_discrepancy_bootstrap
from gammaface.ray_runtime import actor_resources, connect
from gammaface.stage import StageResult
from gammaface.storage import Store
from gammaface.viz import figure_png, pyplot

BALANCE_JSON = "balance.json"
BALANCE_CSV = "balance.csv"
BALANCE_PNG = "balance.png"
TRAIN_TRUTH = "train (dataset labels)"
TRAIN_SEEN = "train (labeller)"


class LabelBatch:
    """Ray Data actor: the classifier loaded once; adds class and confidence per attribute."""

    def __init__(self, classifier_dir: str, image_root: str, threads: int, use_gpu: bool) -> None:
        import torch

        torch.set_num_threads(threads)
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.labeller = Labeller.load(classifier_dir, device)
        self.image_root = image_root

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        images = load_resized(self.image_root, list(batch["path"]), self.labeller.image_size)
        return label_frame(self.labeller, images, batch)


def label_frame(labeller: Labeller, images: np.ndarray, rows: pd.DataFrame) -> pd.DataFrame:
    labels = labeller.frame(images)
    labels.index = rows.index
    return pd.concat([rows, labels], axis=1)


def label_manifest(cfg: Config, generated: pd.DataFrame, image_root: str, classifier_dir: str
                   ) -> pd.DataFrame:
    """`generated` with label and confidence columns, in its own row order."""
    import ray

    lc = cfg.label
    cpus, threads = actor_resources(lc.concurrency, lc.num_gpus)
    frame = generated.reset_index(drop=True).assign(_row=np.arange(len(generated)))
    step = max(lc.batch_size, -(-len(frame) // 200))  # at most about 200 blocks
    ds = ray.data.from_pandas([frame.iloc[s:s + step] for s in range(0, len(frame), step)])
    ds = ds.map_batches(LabelBatch, batch_size=lc.batch_size, batch_format="pandas",
                        fn_constructor_kwargs=dict(classifier_dir=classifier_dir,
                                                   image_root=image_root, threads=threads,
                                                   use_gpu=lc.num_gpus > 0),
                        compute=ray.data.ActorPoolStrategy(size=lc.concurrency), num_cpus=cpus,
                        num_gpus=lc.num_gpus)
    parts = list(ds.iter_batches(batch_size=None, batch_format="pandas"))
    labelled = pd.concat(parts, ignore_index=True).sort_values("_row").drop(columns="_row")
    return labelled.reset_index(drop=True)


def balance_rows(name: str, labels: pd.DataFrame, protected: list[str], seed: int, repeat: int
                 ) -> dict[str, Any]:
    """Discrepancy (point, bootstrap median and std) per protected attribute and intersection,
    and the class shares, over the rows where every protected attribute is known."""
    codes = cell_codes(labels, protected)
    known = labels[codes >= 0]
    row: dict[str, Any] = {"set": name, "n": int(len(known))}
    keys = [(a, [a]) for a in protected] + [(":".join(protected), protected)]
    for key, attrs in keys:
        c = cell_codes(known, attrs)
        n_cells = len(cells(attrs))
        row[f"discrepancy/{key}"] = fairness_discrepancy(c, n_cells)
        median, std = fairness_discrepancy_bootstrap(c, n_cells, seed=seed, repeat=repeat)
        row[f"discrepancy_median/{key}"] = median
        row[f"discrepancy_std/{key}"] = std
    for a in protected:
        shares = known[a].value_counts(normalize=True)
        for cls in registry.get(a).classes:
            row[f"share/{a}/{cls}"] = float(shares.get(cls, 0.0))
    return row


def balance_plot(table: pd.DataFrame, protected: list[str]) -> bytes:
    plt = pyplot()

    keys = [*protected, ":".join(protected)]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(table), 3.4), dpi=120)
    width = 0.8 / len(keys)
    x = np.arange(len(table))
    for i, key in enumerate(keys):
        ax.bar(x + i * width, table[f"discrepancy/{key}"], width,
               yerr=table[f"discrepancy_std/{key}"], capsize=2, label=key)
    ax.set_xticks(x + 0.4 - width / 2, table["set"], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("fairness discrepancy (0 = uniform)")
    ax.legend(fontsize=7)
    return figure_png(fig)


def run(cfg: Config, workdir: Store) -> StageResult:
    import mlflow

    connect(cfg.ray)
    out = workdir.sub(layout.stage_dir("pseudo_label", cfg))
    gen = workdir.sub(layout.stage_dir("generate", cfg))
    classifier_dir = workdir.path(layout.stage_dir("train_classifiers", cfg))
    protected = list(cfg.generate.protected)
    labeller = Labeller.load(classifier_dir)
    missing = [a for a in protected if a not in labeller.attributes]
    if missing:
        raise UserError(f"generate.protected names {', '.join(missing)}, which the classifiers "
                        "were not trained for; add them to classifiers.attributes.")
    out.makedirs()
    rows: dict[str, int] = {}
    table = []
    df, image_root = manifest.read(workdir.path(layout.dataset_dir(cfg), manifest.MANIFEST_FILE))
    train = df[df["split"] == "train"].reset_index(drop=True)
    seen = label_frame(labeller, load_resized(image_root, list(train["path"]), labeller.image_size),
                       train[["path"]])
    repeat, seed = cfg.label.bootstrap, cfg.seed
    table.append(balance_rows(TRAIN_TRUTH, train, protected, seed, repeat))
    table.append(balance_rows(TRAIN_SEEN, seen, protected, seed, repeat))
    generated = []
    for method in cfg.generate.methods:
        rel = f"{method}/{manifest.MANIFEST_FILE}"
        if not gen.exists(rel):
            raise UserError(f"{gen.uri(rel)} does not exist; run the generate stage first.")
        part, _ = gen.read_parquet(rel)
        generated.append(part.assign(path=method + "/" + part["path"]))
    # one actor pool for every method: starting a pool costs more than labelling a small set
    labelled_all = label_manifest(cfg, pd.concat(generated, ignore_index=True), gen.path(),
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
        table.append(balance_rows(method, labelled, protected, seed, repeat))
    print(f"  labelled {len(labelled_all)} generated images")
    frame = pd.DataFrame(table)
    out.write_bytes(BALANCE_CSV, frame.to_csv(index=False).encode())
    out.write_json(BALANCE_JSON, {"protected": protected, "bootstrap": repeat,
                                  "sets": frame.to_dict(orient="records")})
    out.write_bytes(BALANCE_PNG, balance_plot(frame, protected))
    key = ":".join(protected)
    for r in table:
        tag = r["set"].replace(" (", "_").replace(")", "").replace(" ", "_")
        tracking.log_metrics({f"balance/{tag}/{k.split('/', 1)[1]}": v for k, v in r.items()
                              if k.startswith("discrepancy/")})
    for name in (BALANCE_CSV, BALANCE_JSON, BALANCE_PNG):
        if out.is_local:
            mlflow.log_artifact(out.path(name))
    print(f"  balance ({key} discrepancy, lower is fairer): " + ", ".join(
        f"{r['set']} {r[f'discrepancy/{key}']:.3f}±{r[f'discrepancy_std/{key}']:.3f}" for r in table))
    return StageResult("pseudo_label", rows=rows, outputs={"balance": out.uri(BALANCE_JSON)},
                       metrics={f"discrepancy/{r['set']}": r[f"discrepancy/{key}"] for r in table})
