"""Stage `report`: every stage's artifacts -> `report/report.md` with its figures.

The page is meant to let a person judge the run, including when the method does not help:
dataset skew, DDPM samples, the BIC curve, what each component holds, the balance of every
generated set, sample quality, the mixing-ratio ablation and per-group TPR, and a plain verdict
computed from the numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gammaface import layout
from gammaface.classifiers.labeller import Labeller
from gammaface.config import Config
from gammaface.data import manifest
from gammaface.diffusion.images import load_resized
from gammaface.downstream import compare
from gammaface.downstream.mixing import BASELINE
from gammaface.downstream.stage import RESULTS, protected_key
from gammaface.generate.stage import COMPOSITIONS, GRID_FILE
from gammaface.gmm import stage as gmm_stage
from gammaface.metrics import inception
from gammaface.metrics.frechet import frechet_between
from gammaface.report import figures, tables
from gammaface.stage import StageResult
from gammaface.storage import Store

REPORT = "report.md"
QUALITY = "quality.csv"
MAIN_RATIO = 0.5  # the paper's main setting
FD_IMAGES = 2000  # images per set behind each Fréchet distance


def _copy(src: Store, name: str, out: Store, as_name: str) -> str | None:
    if not src.exists(name):
        return None
    out.write_bytes(as_name, src.read_bytes(name))
    return as_name


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def sample_quality(cfg: Config, workdir: Store, data: pd.DataFrame, root: str) -> pd.DataFrame:
    """Fréchet distance to the real test images in the attribute classifier's feature space,
    for every generated set and for real train images (the floor a perfect generator reaches)."""
    labeller = Labeller.load(workdir.path(layout.stage_dir("train_classifiers", cfg)))
    size = labeller.image_size
    test = data[data["split"] == "test"]["path"].tolist()[:FD_IMAGES]
    train = data[data["split"] == "train"]["path"].tolist()[:FD_IMAGES]
    real_images = load_resized(root, test, size)
    real = labeller.embed(real_images)
    skip = inception.unavailable()

    def row(name: str, images: np.ndarray) -> dict[str, object]:
        out: dict[str, object] = {"set": name, "frechet_classifier_features":
                                  frechet_between(labeller.embed(images), real)}
        if skip is None:
            out["inception_fid"] = inception.inception_fid(real_images, images)
        return out

    rows = [row("real train images", load_resized(root, train, size))]
    labels = workdir.sub(layout.stage_dir("pseudo_label", cfg))
    for method in cfg.generate.methods:
        gen, groot = manifest.read(labels.path(method, manifest.MANIFEST_FILE))
        rows.append(row(method, load_resized(groot, gen["path"].tolist()[:FD_IMAGES], size)))
    table = pd.DataFrame(rows)
    table.attrs["inception_skipped"] = skip
    return table


def verdict(summary: pd.DataFrame, ratio: float) -> list[str]:
    """Plain sentences: does the paper's rule (gmm) beat the baseline and its controls?"""
    lines = []
    for n, part in summary.groupby("n_per_class"):
        base = part[part["method"] == BASELINE]
        at = part[part["ratio"] == ratio].set_index("method")
        if base.empty or "gmm" not in at.index:
            continue
        b, g = base.iloc[0], at.loc["gmm"]
        fairer = g["B_mean"] < b["B_mean"] - max(b["B_std"], g["B_std"])
        worse = g["B_mean"] > b["B_mean"] + max(b["B_std"], g["B_std"])
        acc_kept = g["Acc_mean"] >= b["Acc_mean"] - max(b["Acc_std"], g["Acc_std"])
        what = ("reduces Bias" if fairer else "increases Bias" if worse
                else "does not change Bias beyond the spread over seeds")
        lines.append(f"With {n} real images per class and ratio {ratio:g}, `gmm` {what} "
                     f"({_fmt(b['B_mean'])} -> {_fmt(g['B_mean'])}) and "
                     f"{'keeps' if acc_kept else 'loses'} accuracy "
                     f"({_fmt(b['Acc_mean'])} -> {_fmt(g['Acc_mean'])}).")
        controls = [m for m in ("gmm_weighted", "single_gaussian", "unconditional") if m in at.index]
        better = [m for m in controls if at.loc[m, "B_mean"] < g["B_mean"]]
        if better:
            lines.append(f"  The control(s) {', '.join(f'`{m}`' for m in better)} reach a lower "
                         "Bias than `gmm`, so the equal-count mixture is not what helps here.")
        elif controls:
            lines.append("  `gmm` has a lower Bias than every control "
                         f"({', '.join(f'`{m}`' for m in controls)}).")
        best = at["B_mean"].idxmin()
        lines.append(f"  Lowest Bias at this ratio: `{best}` ({_fmt(at.loc[best, 'B_mean'])}).")
    return lines


def run(cfg: Config, workdir: Store) -> StageResult:
    import mlflow

    d = cfg.downstream
    out = workdir.sub(layout.stage_dir("report", cfg))
    out.makedirs()
    md: list[str] = [f"# gammaface report: {cfg.name}", ""]
    sel = workdir.sub(layout.stage_dir("gmm_search", cfg)).read_json(gmm_stage.SELECTED)
    md += [f"Dataset `{cfg.data.dataset}`; harvest `{sel['source']}` at t* = {sel['t_star']}; "
           f"mixture in `{sel['space']}` space, K = {sel['k']} ({sel['chosen_by']}); draws "
           f"`{cfg.generate.draw}`, eta {cfg.generate.eta:g}, {cfg.generate.n} images per method; "
           f"downstream target `{d.target}`, protected `{', '.join(d.protected)}`.", ""]

    df, root = manifest.read(workdir.path(layout.dataset_dir(cfg), manifest.MANIFEST_FILE))
    out.write_bytes("skew.png", figures.skew(df[df["split"] == "train"]))
    md += ["## The training data", "", "Class shares of the train split (dashed: uniform).", "",
           "![skew](skew.png)", ""]
    ddpm = workdir.sub(layout.stage_dir("train_ddpm", cfg))
    if _copy(ddpm, "samples.png", out, "ddpm_samples.png"):
        md += ["## DDPM samples", "", "![DDPM samples](ddpm_samples.png)", ""]

    gmm = workdir.sub(layout.stage_dir("gmm_search", cfg))
    _copy(gmm, gmm_stage.BIC_PLOT, out, "bic.png")
    md += ["## The mixture", "", "![BIC](bic.png)", ""]
    if sel.get("nmi"):
        md += ["NMI between component and attribute: " + ", ".join(
            f"{a} {_fmt(v)}" for a, v in sel["nmi"].items()) + ".", ""]
    gen = workdir.sub(layout.stage_dir("generate", cfg))
    if gen.exists(COMPOSITIONS):
        comp = pd.read_csv(gen.path(COMPOSITIONS))
        md += ["Component weights under each method and composition over the protected cells "
               "(`generated/compositions.csv`):", "", tables.markdown(comp), ""]
    for method in cfg.generate.methods:
        if _copy(gen.sub(method), GRID_FILE, out, f"grid_{method}.png"):
            md += [f"**{method}**, one row per component (or cell):", "",
                   f"![{method}](grid_{method}.png)", ""]

    labels = workdir.sub(layout.stage_dir("pseudo_label", cfg))
    bal = pd.read_csv(labels.path("balance.csv"))
    _copy(labels, "balance.png", out, "balance.png")
    cols = ["set", "n"] + [c for c in bal.columns if c.startswith("discrepancy/")]
    md += ["## Balance of the generated sets", "",
           "Fairness discrepancy (0 = uniform) of the protected attributes by the labeller's "
           "pseudo-labels; error bars are bootstrap standard deviations.", "",
           "![balance](balance.png)", "", tables.markdown(bal[cols]), ""]

    quality = sample_quality(cfg, workdir, df, root)
    out.write_bytes(QUALITY, quality.to_csv(index=False).encode())
    skipped = quality.attrs.get("inception_skipped")
    md += ["## Sample quality", "",
           "Fréchet distance to the real test images in the feature space of this run's own "
           "attribute classifier: a distance between this run's image sets, not comparable to "
           "published Inception FID values. It grows with any shift of the attribute mix as "
           "well as with image quality.", "",
           f"Inception FID: skipped ({skipped})." if skipped else
           "Inception FID (torchmetrics, 2048-d pool features, images upsampled to 299 px) "
           "beside it.", "", tables.markdown(quality), ""]

    results = pd.read_csv(workdir.path(layout.stage_dir("downstream", cfg), d.target, RESULTS))
    results["target"], results["protected"] = d.target, ",".join(d.protected)
    summary = compare.summarise(results)
    key = protected_key(cfg)
    compare.write(summary, d.target, key, out)
    ratio = MAIN_RATIO if MAIN_RATIO in set(results["ratio"]) else float(results["ratio"].max())
    md += ["## Downstream classifiers", "", compare.markdown(summary, d.target, key), "",
           "![ablation](compare.png)", "", "### Verdict", "", *verdict(summary, ratio), ""]
    tpr_cols = [c for c in results.columns if c.startswith(f"tpr/{key}/")]
    main = results[(results["ratio"] == ratio) | (results["method"] == BASELINE)]
    tprs = {m: main[main["method"] == m][tpr_cols].mean().rename(lambda c: c.split("/")[-1])
              for m in (BASELINE, "gmm", "gmm_attr") if (main["method"] == m).any()}
    if tprs and tpr_cols:
        out.write_bytes("group_tpr.png", figures.group_tpr(tprs))
        md += [f"Per-group TPR for `{key}` (baseline, and the methods at ratio {ratio:g}):", "",
               "![group TPR](group_tpr.png)", ""]
    out.write_bytes(REPORT, "\n".join(md).encode())
    if out.is_local:
        mlflow.log_artifacts(out.path(), artifact_path="report")
    print(f"report: {out.uri(REPORT)}")
    print(compare.markdown(summary, d.target, key), end="")
    return StageResult("report", outputs={"report": out.uri(REPORT)})
