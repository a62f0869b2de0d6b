"""The comparison the paper prints, read back from MLflow: B, BA, Acc., BPC and KL per method
and ratio, as mean +/- std over seeds, with a plot of bias and accuracy against the ratio."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gammaface.downstream.mixing import BASELINE
from gammaface.errors import UserError
from gammaface.viz import figure_png, pyplot

KIND_FILTER = "tags.`gammaface.kind` = 'downstream'"
GROUP = ["n_per_class", "method", "ratio"]
TABLE_FILE = "compare.md"
CSV_FILE = "compare.csv"
PLOT_FILE = "compare.png"


def load_runs(experiment: str | None = None, run_id: str | None = None,
              tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per downstream job: its tags as columns and its metrics by their names. With a
    run id, the jobs of that pipeline run (or that downstream stage run); else the jobs of the
    experiment's most recent pipeline run that has any."""
    import mlflow

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
        page = client.search_runs(exp_ids, KIND_FILTER, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    if run_id:
        runs = [r for r in runs if run_id in (r.data.tags.get("gammaface.pipeline_run"),
                                              r.data.tags.get("mlflow.parentRunId"))]
    elif runs:
        latest = max(runs, key=lambda r: r.info.start_time)
        runs = [r for r in runs if r.data.tags.get("gammaface.pipeline_run")
                == latest.data.tags.get("gammaface.pipeline_run")]
    if not runs:
        raise UserError("no downstream runs found" + (f" under run {run_id}" if run_id else
                                                       f" in experiment {experiment!r}") + ".")
    rows = []
    for r in runs:
        t = r.data.tags
        rows.append({"run_id": r.info.run_id, "method": t["method"], "ratio": float(t["ratio"]),
                     "seed": int(t["seed"]), "n_per_class": int(t["n_per_class"]),
                     "target": t["target"], "protected": t["protected"], **r.data.metrics})
    return pd.DataFrame(rows)


def protected_columns(df: pd.DataFrame) -> tuple[str, list[str]]:
    """The intersection key and the binary protected attributes that have a KL."""
    protected = df["protected"].iloc[0].split(",")
    key = ":".join(protected)
    kl = [a for a in protected if f"kl_ref/{a}" in df.columns]
    return key, kl


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every compared metric, one row per (size, method, ratio)."""
    key, kl = protected_columns(df)
    metrics = {"B": f"bias/{key}", "BA": f"ba/{key}", "BA_x100": f"ba_x100/{key}",
               "Acc": "accuracy", "BPC": f"bpc/{key}",
               **{f"KL_{a}": f"kl_ref/{a}" for a in kl}}
    present = {k: v for k, v in metrics.items() if v in df.columns}
    g = df.groupby(GROUP)
    out = g.size().rename("seeds").to_frame()
    for label, col in present.items():
        out[f"{label}_mean"] = g[col].mean()
        out[f"{label}_std"] = g[col].std(ddof=1).fillna(0.0)
    out = out.reset_index()
    order = {m: i for i, m in enumerate([BASELINE, *sorted(set(out["method"]) - {BASELINE})])}
    return out.sort_values(["n_per_class", "ratio", "method"], key=lambda s: s.map(order)
                           if s.name == "method" else s).reset_index(drop=True)


def markdown(summary: pd.DataFrame, target: str, key: str) -> str:
    labels = [c[:-5] for c in summary.columns if c.endswith("_mean")]
    arrows = {"B": "↓", "BA": "↓", "BA_x100": "↓", "Acc": "↑", "BPC": "↑"}
    head = ["n/class", "method", "ratio", *[f"{m} {arrows.get(m, '↓')}" for m in labels]]
    lines = [f"Target `{target}`, protected `{key}`; mean ± std over seeds. B: Bias, BA: bias "
             "amplification (x100 as the paper prints it), BPC: bias-performance trade-off "
             "against the baseline of the same seed, KL: reference KL per binary protected "
             "attribute.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        cells = [str(int(r["n_per_class"])), r["method"], f"{r['ratio']:g}"]
        for m in labels:
            mean, std = r[f"{m}_mean"], r[f"{m}_std"]
            cells.append("n/a" if not np.isfinite(mean) else f"{mean:.4f} ± {std:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: pd.DataFrame) -> bytes:
    plt = pyplot()

    sizes = sorted(summary["n_per_class"].unique())
    fig, axes = plt.subplots(len(sizes), 2, figsize=(9, 3.2 * len(sizes)), dpi=110, squeeze=False)
    for row, n in zip(axes, sizes):
        part = summary[summary["n_per_class"] == n]
        base = part[part["method"] == BASELINE]
        for ax, metric, name in ((row[0], "B", "Bias (lower is fairer)"),
                                 (row[1], "Acc", "accuracy")):
            for method, g in part[part["method"] != BASELINE].groupby("method"):
                g = pd.concat([base, g]).sort_values("ratio")  # every line starts at the baseline
                ax.errorbar(g["ratio"], g[f"{metric}_mean"], yerr=g[f"{metric}_std"], marker="o",
                            capsize=2, label=method)
            if not base.empty:
                ax.axhline(base[f"{metric}_mean"].iloc[0], color="k", lw=0.8, ls=":",
                           label="baseline")
            ax.set_xlabel("generated share of the training set")
            ax.set_title(f"{name}, {n} per class", fontsize=9)
        row[0].legend(fontsize=7)
    return figure_png(fig)


def write(summary: pd.DataFrame, target: str, key: str, out: Any) -> None:
    """Markdown, CSV and plot into a Store."""
    out.write_bytes(TABLE_FILE, markdown(summary, target, key).encode())
    out.write_bytes(CSV_FILE, summary.to_csv(index=False).encode())
    out.write_bytes(PLOT_FILE, plot(summary))
