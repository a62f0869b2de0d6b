"""Stage `audit`: every generated set as the judge sees it -> `audit/audit.csv` and `.json`.

The judge (stage `train_judge`) took no part in making, choosing or labelling the sets, so the
balance it measures is not the labeller grading its own picks. Per set, over the cells of the
protected attributes (and of the quota cells, where they differ):
- balance three ways, each with a 95 % bootstrap interval: hard (the judge's counted cells),
  soft (its mean cell probabilities) and corrected for its own errors through its confusion
  matrix on the real test split;
- agreement between judge and labeller (share of images both put in the same cell);
- novelty: each image's distance to its nearest training image, in pixels and in the judge's
  features, beside the same distance for real test images; the share of near copies (closer
  than the 1st percentile of the test images' distances); precision and recall against the
  real test images in the judge's feature space.
The real train and test splits are audited too, as the reference a generated set is read by.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gammaface.run import layout, tracking
from gammaface.classifiers.labeller import Labeller
from gammaface.data import manifest, registry
from gammaface.data.cells import cell_codes, cells
from gammaface.generate import methods as generation
from gammaface.generate.methods import quota_attributes
from gammaface.common.images import load_resized
from gammaface.metrics import judged, novelty
from gammaface.common.progress import progress
from gammaface.run.stage import StageContext, StageResult

TRAIN, TEST = "train (real)", "test (real)"
REFERENCE_CHUNK = 4096  # training images loaded at once for the nearest-neighbour search
PR_MAX = 2000  # rows per side behind precision and recall


def _judge_view(judge: Labeller, images: np.ndarray) -> dict[str, Any]:
    probs = judge.probabilities(images)
    classes = {a: np.asarray(registry.get(a).classes, dtype=object)[p.argmax(axis=1)]
               for a, p in probs.items()}
    return {"probs": probs, "frame": pd.DataFrame(classes),
            "features": judge.embed(images),
            "pixels": images.reshape(len(images), int(np.prod(images.shape[1:])))}


def _nearest(judge: Labeller, root: str, train_paths: list[str], size: int,
             queries: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Per set, distances to the nearest training image in pixels and features, the training
    images streamed in chunks so memory is bounded by a chunk, not the split."""
    best = {name: {k: np.full(len(q["pixels"]), np.inf) for k in ("pixels", "features")}
            for name, q in queries.items()}
    with progress(len(train_paths), "training images compared", unit="img") as bar:
        for s in range(0, len(train_paths), REFERENCE_CHUNK):
            chunk = load_resized(root, train_paths[s:s + REFERENCE_CHUNK], size)
            ref = {"pixels": chunk.reshape(len(chunk), -1),
                   "features": judge.embed(chunk)}
            for name, q in queries.items():
                for k in ("pixels", "features"):
                    d = novelty.nearest_distances(q[k], ref[k])
                    np.minimum(best[name][k], d, out=best[name][k])
            bar.update(len(chunk))
    return best


def _row(name: str, view: dict[str, Any], labeller_frame: pd.DataFrame | None,
         held: tuple[np.ndarray, np.ndarray], dist: dict[str, np.ndarray] | None,
         held_dist: dict[str, np.ndarray], test_features: np.ndarray, attrs: list[str],
         seed: int, repeat: int) -> dict[str, Any]:
    key = ":".join(attrs)
    codes = cell_codes(view["frame"], attrs)
    cprobs = judged.cell_probabilities([view["probs"][a] for a in attrs])
    b = judged.judged_balance(codes, cprobs, held[0], held[1], len(cells(attrs)), seed, repeat)
    row: dict[str, Any] = {"set": name, "cells": key, "n": int(len(codes))}
    for kind in ("hard", "soft", "corrected"):
        row[f"{kind}"] = b[kind]
        row[f"{kind}_lo"], row[f"{kind}_hi"] = b[f"{kind}_ci"]
    if len(codes):  # an exactly balanced set of this size, through this judge
        row.update(judged.balanced_floor(len(codes), judged.confusion(*held, len(cells(attrs))),
                                         seed, repeat))
    for a in attrs:  # the judge's class shares: against the data's, the generator's own skew
        shares = view["frame"][a].value_counts(normalize=True)
        for cls in registry.get(a).classes:
            row[f"share/{a}/{cls}"] = float(shares.get(cls, 0.0))
    if labeller_frame is not None:
        mine = cell_codes(labeller_frame, attrs)
        both = (mine >= 0) & (codes >= 0)
        row["agreement"] = float((mine[both] == codes[both]).mean()) if both.any() else float("nan")
    for k in ("pixels", "features"):  # none for the train split: each image is its own nearest
        threshold = float(np.percentile(held_dist[k], novelty.NEAR_COPY_PERCENTILE))
        row[f"nn_median/{k}"] = float(np.median(dist[k])) if dist is not None else float("nan")
        row[f"near_copy_share/{k}"] = (float((dist[k] < threshold).mean()) if dist is not None
                                       else float("nan"))
    row["nn_median_test/pixels"] = float(np.median(held_dist["pixels"]))
    rng = np.random.default_rng(seed)
    fake = view["features"][rng.permutation(len(view["features"]))[:PR_MAX]]
    real = test_features[rng.permutation(len(test_features))[:PR_MAX]]
    row["precision"], row["recall"] = novelty.precision_recall(real, fake)
    return row


def _log_and_say(ctx: StageContext, table: list[dict[str, Any]], groups: list[list[str]]) -> None:
    """Every set's judged figures to MLflow, and the corrected discrepancies to the log."""
    for r in table:
        tag = r["set"].replace(" (", "_").replace(")", "").replace(" ", "_")
        tracking.log_metrics({f"judge/{tag}/{r['cells']}/{k}": float(r[k])
                              for k in ("hard", "soft", "corrected", "agreement",
                                        "near_copy_share/features", "precision", "recall")
                              if k in r and pd.notna(r[k])})
    for attrs in groups:
        key = ":".join(attrs)
        ctx.echo(f"  judge-measured {key} discrepancy, corrected [95 % interval]; near copies: "
                 + "; ".join(f"{r['set']} {r['corrected']:.3f} [{r['corrected_lo']:.3f}, "
                             f"{r['corrected_hi']:.3f}], {r['near_copy_share/features']:.1%}"
                             if pd.notna(r.get('near_copy_share/features')) else
                             f"{r['set']} {r['corrected']:.3f} [{r['corrected_lo']:.3f}, "
                             f"{r['corrected_hi']:.3f}]"
                             for r in table if r["cells"] == key))


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    out, labels = ctx.out, ctx.folder("pseudo_label")
    out.makedirs()
    judge = Labeller.load(ctx.folder("train_judge").path())
    size = cfg.ddpm_resolution
    df, root = manifest.read(ctx.manifest_path)
    train = df[df["split"] == "train"].reset_index(drop=True)
    test = df[df["split"] == "test"].reset_index(drop=True)
    groups = [list(cfg.generate.protected)]
    if any(generation.in_family(m, "quota") for m in cfg.generate.methods) and quota_attributes(cfg) != groups[0]:
        groups.append(quota_attributes(cfg))
    views: dict[str, dict[str, Any]] = {}
    frames: dict[str, pd.DataFrame | None] = {}
    test_view = _judge_view(judge, load_resized(root, list(test["path"]), size))
    for method in cfg.generate.methods:
        part, part_root = manifest.read(labels.path(f"{method}/{manifest.MANIFEST_FILE}"))
        views[method] = _judge_view(judge, load_resized(part_root, list(part["path"]), size))
        frames[method] = part
    # the train split's own audit row: a sample, as large as the largest generated set
    rng = np.random.default_rng(cfg.seed)
    n_train_rows = min(len(train), max([len(v["pixels"]) for v in views.values()] + [len(test)]))
    train_sample = train.iloc[np.sort(rng.permutation(len(train))[:n_train_rows])]
    views = {TRAIN: _judge_view(judge, load_resized(root, list(train_sample["path"]), size)),
             TEST: test_view, **views}
    frames = {TRAIN: None, TEST: None, **frames}
    ctx.echo(f"  nearest training image of {sum(len(v['pixels']) for v in views.values())} images "
             f"among {len(train)}")
    dist = _nearest(judge, root, list(train["path"]), size,
                    {k: v for k, v in views.items() if k != TRAIN})
    table = []
    for attrs in groups:
        true_test = cell_codes(test, attrs)
        judged_test = cell_codes(test_view["frame"], attrs)
        known = true_test >= 0
        held = (true_test[known], judged_test[known])
        for name, view in views.items():
            row = _row(name, view, frames[name], held, dist.get(name), dist[TEST],
                       test_view["features"], attrs, cfg.seed, cfg.label.bootstrap)
            if name == TRAIN:  # what the judge should find: the split's true discrepancy
                truth = cell_codes(train, attrs)
                counts = np.bincount(truth[truth >= 0], minlength=len(cells(attrs)))
                row["true"] = float(judged.discrepancy(counts / counts.sum()))
                for a in attrs:
                    shares = train[a].value_counts(normalize=True)
                    for cls in registry.get(a).classes:
                        row[f"true_share/{a}/{cls}"] = float(shares.get(cls, 0.0))
            table.append(row)
    frame = pd.DataFrame(table)
    out.write_bytes(layout.AUDIT_CSV, frame.to_csv(index=False).encode())
    out.write_json(layout.AUDIT_JSON, {"groups": [":".join(g) for g in groups],
                                       "judge": ctx.folders["train_judge"],
                                       "bootstrap": cfg.label.bootstrap,
                                       "sets": frame.to_dict(orient="records")})
    if out.is_local:
        tracking.log_artifact(out.path(layout.AUDIT_CSV))
    _log_and_say(ctx, table, groups)
    return StageResult("audit", rows={"sets": len(views)},
                       outputs={"audit": out.uri(layout.AUDIT_CSV)})
