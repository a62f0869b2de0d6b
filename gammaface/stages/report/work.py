"""Stage `report`: every stage's artifacts -> `report/report.md` with its figures, and the same
as one self-contained page, `report/report.html` (figures embedded), logged to MLflow.

The page is meant to let a person judge the run, including when the method does not help:
dataset skew, DDPM samples, the BIC curve, what each component holds, the balance of every
generated set, sample quality, the mixing-ratio ablation and per-group TPR, and a plain verdict
computed from the numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gammaface.report import figures, tables, webpage
from gammaface.run import layout, tracking
from gammaface.classifiers import inception
from gammaface.config import Config, quota_n
from gammaface.classifiers.labeller import Labeller
from gammaface.data import manifest
from gammaface.downstream import compare
from gammaface.downstream.mixing import BASELINE
from gammaface.generate import methods as generation
from gammaface.generate.methods import quota_draw
from gammaface.common.images import load_resized
from gammaface.metrics.evaluate import INTERSECTION_SEP
from gammaface.metrics.frechet import frechet_between
from gammaface.run.stage import StageContext, StageResult
from gammaface.storage.store import Store

QUALITY = "quality.csv"
MAIN_RATIO = 0.5  # the paper's main setting
FD_IMAGES = 2000  # images per set behind each Fréchet distance


def _copy(src: Store, name: str, out: Store, as_name: str) -> str | None:
    if not src.exists(name):
        return None
    out.write_bytes(as_name, src.read_bytes(name))
    return as_name


def _sample_quality(ctx: StageContext, data: pd.DataFrame, root: str) -> pd.DataFrame:
    """Fréchet distance to the real test images in the attribute classifier's feature space,
    for every generated set and for real train images (the floor a perfect generator reaches)."""
    cfg = ctx.cfg
    labeller = Labeller.load(ctx.folder("train_classifiers").path())
    size = labeller.image_size
    test = data[data["split"] == "test"]["path"].tolist()[:FD_IMAGES]
    train = data[data["split"] == "train"]["path"].tolist()[:FD_IMAGES]
    real_images = load_resized(root, test, size)
    real = labeller.embed(real_images)
    skip = inception.unavailable()

    def row(name: str, images: np.ndarray) -> dict[str, object]:
        if len(images) < 2:  # a quota set that kept (almost) nothing has no distribution
            return {"set": name, "frechet_classifier_features": float("nan")}
        out: dict[str, object] = {"set": name, "frechet_classifier_features":
                                  frechet_between(labeller.embed(images), real)}
        if skip is None:
            out["inception_fid"] = inception.inception_fid(real_images, images)
        return out

    rows = [row("real train images", load_resized(root, train, size))]
    labels = ctx.folder("pseudo_label")
    for method in cfg.generate.methods:
        gen, groot = manifest.read(labels.path(method, manifest.MANIFEST_FILE))
        rows.append(row(method, load_resized(groot, gen["path"].tolist()[:FD_IMAGES], size)))
    table = pd.DataFrame(rows)
    table.attrs["inception_skipped"] = skip
    return table


def _predicted_vs_measured(gen: Store, bal: pd.DataFrame, audit: pd.DataFrame, key: str
                           ) -> pd.DataFrame | None:
    """Per mixture method: the predicted discrepancy of `key`, the labeller's and the judge's."""
    if not gen.exists(layout.GENERATED_PREDICTED):
        return None
    pred = pd.read_csv(gen.path(layout.GENERATED_PREDICTED))
    col = f"discrepancy/{key}"
    if col not in pred.columns:
        return None
    rows = []
    judged = audit[audit["cells"] == key].set_index("set")  # audit.csv always names its cells
    labelled = bal.set_index("set")
    for _, r in pred.iterrows():
        m = r["method"]
        if m not in labelled.index:  # a method the config no longer generates
            continue
        j = judged.loc[m] if m in judged.index else None
        rows.append({"method": m, "predicted": r[col], "labeller": labelled.loc[m, col],
                     "labeller_std": labelled.loc[m, f"discrepancy_std/{key}"],
                     "judge": np.nan if j is None else j["corrected"],
                     "judge_lo": np.nan if j is None else j["corrected_lo"],
                     "judge_hi": np.nan if j is None else j["corrected_hi"]})
    return pd.DataFrame(rows) if rows else None


def _eval_sentence(results: pd.DataFrame, target: str) -> str:
    """The evaluation cells every job was scored on (the same for all jobs)."""
    cols = [c for c in results.columns if c.startswith("eval_n/")]
    if not cols:
        return "The evaluation set's cell counts were not recorded."
    first = results.iloc[0]
    return (f"Every classifier is scored on the same evaluation images; per `{target}` x "
            "protected cell: " + ", ".join(f"{c[len('eval_n/'):]} {int(first[c])}" for c in cols)
            + ".")


def _quota_size_note(cfg: Config) -> str:
    """The quota sets' size, where it is set apart from the other methods'."""
    if cfg.generate.quota.n is None or not any(generation.in_family(m, "quota") for m in cfg.generate.methods):
        return ""
    return f" ({quota_n(cfg)} per quota set)"


def _quota_draw_note(cfg: Config) -> str:
    """How the quota sets draw, where that differs from the other mixture methods."""
    parts = [] if quota_draw(cfg) == cfg.generate.draw else [f"`{quota_draw(cfg)}`"]
    if cfg.generate.quota.t_start is not None:
        parts.append(f"finished from t = {cfg.generate.quota.t_start}")
    return f" (quota sets {', '.join(parts)})" if parts else ""


def _header(ctx: StageContext, sel: dict[str, Any]) -> list[str]:
    cfg, d = ctx.cfg, ctx.cfg.downstream
    return [f"# gammaface report: {cfg.name}", "",
            f"Dataset `{cfg.data.dataset}`; harvest `{sel['source']}` at t* = {sel['t_star']}; "
            f"mixture in `{sel['space']}` space, K = {sel['k']} ({sel['chosen_by']}); draws "
            f"`{cfg.generate.draw}`" + _quota_draw_note(cfg) + f", eta {cfg.generate.eta:g}, "
            f"{cfg.generate.n} images per method" + _quota_size_note(cfg) + "; "
            f"downstream target `{d.target}`, protected `{', '.join(d.protected)}`.", ""]


def _data_and_mixture(ctx: StageContext, df: pd.DataFrame, sel: dict[str, Any], out: Store) -> list[str]:
    """The training data, the DDPM's samples, the mixture, the t* sweep and each set's grid."""
    fmt = tables.cell
    gmm = ctx.folder("gmm_search")
    out.write_bytes("skew.png", figures.skew(df[df["split"] == "train"]))
    md = ["## The training data", "", "Class shares of the train split (dashed: uniform).", "",
          "![skew](skew.png)", ""]
    if _copy(ctx.folder("train_ddpm"), layout.DDPM_SAMPLES, out, "ddpm_samples.png"):
        md += ["## DDPM samples", "", "![DDPM samples](ddpm_samples.png)", ""]

    _copy(gmm, layout.GMM_BIC_PLOT, out, "bic.png")
    md += ["## The mixture", "", "![BIC](bic.png)", ""]
    if sel.get("nmi"):
        md += ["NMI between component and attribute: " + ", ".join(
            f"{a} {fmt(v)}" for a, v in sel["nmi"].items()) + ".", ""]
    sweep = ctx.workdir.sub(layout.SWEEP_DIR)
    if _copy(sweep, layout.SWEEP_PLOT, out, "sweep.png"):
        md += ["The t* sweep of this workdir (`gammaface gmm sweep`, `sweep/sweep.csv`):", "",
               "![t* sweep](sweep.png)", ""]
    else:
        md += ["No t* sweep in this workdir: `gammaface gmm sweep CONFIG` measures K and NMI "
               "over t* and the space, and this page then shows it.", ""]
    gen = ctx.folder("generate")
    if gen.exists(layout.GENERATED_COMPOSITIONS):
        comp = pd.read_csv(gen.path(layout.GENERATED_COMPOSITIONS))
        cell_cols = [c for c in comp.columns if c != "component" and not c.startswith("weight/")]
        out.write_bytes("compositions.png", figures.composition_heatmap(
            comp.set_index("component")[cell_cols]))
        md += ["What each component holds: its share of every protected cell.", "",
               "![compositions](compositions.png)", "",
               "Component weights under each method and composition over the protected cells "
               "(`generated/compositions.csv`):", "", tables.markdown(comp), ""]
    for method in ctx.cfg.generate.methods:
        kept, _ = gen.read_parquet(f"{method}/{manifest.MANIFEST_FILE}")
        if kept.empty:  # a quota set that kept nothing: a blank grid would say nothing
            md += [f"**{method}** kept no image.", ""]
        elif _copy(gen.sub(method), layout.GENERATED_GRID, out, f"grid_{method}.png"):
            md += [f"**{method}**, one row per component (or cell):", "",
                   f"![{method}](grid_{method}.png)", ""]
    return md


def _balance(ctx: StageContext, bal: pd.DataFrame, out: Store) -> list[str]:
    """Each set's balance by the labeller, and what each quota set cost."""
    labels, gen = ctx.folder("pseudo_label"), ctx.folder("generate")
    _copy(labels, layout.BALANCE_PLOT, out, "balance.png")
    cols = ["set", "n"] + [c for c in bal.columns if c.startswith("discrepancy/")]
    md = ["## Balance of the generated sets", "",
          "Fairness discrepancy (0 = uniform) of the protected attributes by the labeller's "
          "pseudo-labels; error bars are bootstrap standard deviations.", "",
          "![balance](balance.png)", "", tables.markdown(bal[cols]), ""]

    quota_rows = []
    for method in ctx.cfg.generate.methods:
        if gen.exists(f"{method}/{layout.GENERATED_QUOTA}"):
            q = gen.read_json(f"{method}/{layout.GENERATED_QUOTA}")
            short = [f"{c['cell']} {c['short']}" for c in q["cells"] if c["short"] > 0]
            rare = min(q["cells"], key=lambda c: c["acceptance"] if c["acceptance"] is not None else 1)
            quota_rows.append({"set": method, "kept": q["kept"], "asked": q["target"],
                               "renders": q["renders"], "renders per kept": q["renders_per_kept"],
                               # sets made before the cost was counted lack these
                               "UNet evaluations per render": q.get("unet_per_render"),
                               "stopped early": q.get("exited", 0),
                               "UNet evaluations per kept": q.get("unet_per_kept"),
                               "rarest cell": rare["cell"],
                               "its renders per kept": rare["renders_per_kept"],
                               "stopped": q["stopped"], "short": ", ".join(short) or "none"})
    if quota_rows:
        md += ["## Quota sets", "", "Exact counts per cell, kept by pseudo-label; what each "
               "proposal cost (`generated/<set>/quota.json`).", "",
               tables.markdown(pd.DataFrame(quota_rows)), ""]
    return md


def _judged(ctx: StageContext, bal: pd.DataFrame, out: Store) -> list[str]:
    """The judge's audit, and each mixture method's predicted balance against its measured."""
    audit = pd.read_csv(ctx.folder("audit").path(layout.AUDIT_CSV))
    cols = [c for c in ("set", "cells", "n", "true", "hard", "soft", "corrected", "corrected_lo",
                        "corrected_hi", "agreement", "near_copy_share/features",
                        "near_copy_share/pixels", "nn_median/pixels", "precision", "recall")
            if c in audit.columns]
    md = ["## Balance and novelty by the judge", "",
          "The judge was trained with another seed on other images and chose nothing. "
          "Discrepancy hard (counted), soft (mean probabilities) and corrected through its "
          "confusion matrix on the real test split, with the 95 % bootstrap interval of the "
          "corrected one; agreement with the labeller; near copies: share of images closer "
          "to a training image than 99 % of the real test images are.", "",
          tables.markdown(audit[cols]), ""]

    predicted = _predicted_vs_measured(ctx.folder("generate"), bal, audit,
                                       ":".join(ctx.cfg.generate.protected))
    if predicted is not None:
        out.write_bytes("predicted_vs_measured.png", figures.predicted_vs_measured(predicted))
        md += ["Each mixture method's intersection discrepancy as predicted from the component "
               "compositions before rendering, against what its set measured (on the diagonal "
               "the prediction held):", "", "![predicted against measured](predicted_vs_measured.png)",
               ""]
    return md


def _quality(ctx: StageContext, df: pd.DataFrame, root: str, out: Store) -> list[str]:
    quality = _sample_quality(ctx, df, root)
    out.write_bytes(QUALITY, quality.to_csv(index=False).encode())
    skipped = quality.attrs.get("inception_skipped")
    return ["## Sample quality", "",
            "Fréchet distance to the real test images in the feature space of this run's own "
            "attribute classifier: a distance between this run's image sets, not comparable to "
            "published Inception FID values. It grows with any shift of the attribute mix as "
            "well as with image quality.", "",
            f"Inception FID: skipped ({skipped})." if skipped else
            "Inception FID (torchmetrics, 2048-d pool features, images upsampled to 299 px) "
            "beside it.", "", tables.markdown(quality), ""]


def _downstream(ctx: StageContext, out: Store) -> tuple[list[str], str]:
    """The comparison, its verdict and the per-group TPRs; and the table `run` ends with."""
    d = ctx.cfg.downstream
    results = pd.read_csv(ctx.folder("downstream").path(d.target, layout.DOWNSTREAM_RESULTS))
    results["target"], results["protected"] = d.target, ",".join(d.protected)
    summary = compare.summarise(results)
    key = INTERSECTION_SEP.join(d.protected)
    compare.write(summary, d.target, key, out)
    ratio = MAIN_RATIO if MAIN_RATIO in set(results["ratio"]) else float(results["ratio"].max())
    md = ["## Downstream classifiers", "", _eval_sentence(results, d.target), "",
          compare.markdown(summary, d.target, key), "", "![ablation](compare.png)", "",
          "### Verdict", "", *compare.verdict(results, summary), ""]
    tpr_cols = [c for c in results.columns if c.startswith(f"tpr/{key}/")]
    main = results[(results["ratio"] == ratio) | (results["method"] == BASELINE)]
    tprs = {m: main[main["method"] == m][tpr_cols].mean().rename(lambda c: c.split("/")[-1])
              for m in (BASELINE, "gmm", "gmm_attr") if (main["method"] == m).any()}
    if tprs and tpr_cols:
        out.write_bytes("group_tpr.png", figures.group_tpr(tprs))
        md += [f"Per-group TPR for `{key}` (baseline, and the methods at ratio {ratio:g}):", "",
               "![group TPR](group_tpr.png)", ""]
    return md, compare.markdown(summary, d.target, key).rstrip("\n")


def run(ctx: StageContext) -> StageResult:
    out = ctx.out
    out.makedirs()
    sel = ctx.folder("gmm_search").read_json(layout.GMM_SELECTED)
    df, root = manifest.read(ctx.manifest_path)
    bal = pd.read_csv(ctx.folder("pseudo_label").path(layout.BALANCE_CSV))
    downstream, table = _downstream(ctx, out)
    md = [*_header(ctx, sel), *_data_and_mixture(ctx, df, sel, out), *_balance(ctx, bal, out),
          *_judged(ctx, bal, out), *_quality(ctx, df, root, out), *downstream]
    if tracking.active_run_id() is not None:
        md += ["", f"MLflow run `{tracking.active_run_id()}`."]
    text = "\n".join(md)
    out.write_bytes(layout.REPORT, text.encode())
    page = webpage.render(text, f"gammaface report: {ctx.cfg.name}",
                          lambda name: out.read_bytes(name) if out.exists(name) else None)
    lost = webpage.missing_images(page)
    if lost:  # every figure above is written before the page; a gap is a bug, not a user error
        raise RuntimeError(f"report.html could not embed {', '.join(lost)}")
    out.write_bytes(layout.REPORT_HTML, page.encode())
    if out.is_local:
        tracking.log_artifacts(out.path(), artifact_path="report")
    ctx.echo(f"report: {out.uri(layout.REPORT)}")
    ctx.echo(table)
    return StageResult("report", outputs={"report": out.uri(layout.REPORT)})
