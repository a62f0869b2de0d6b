"""The comparison the paper prints: B, BA, Acc., BPC and KL per method and ratio, as mean +/- std
over seeds, with a plot of bias and accuracy against the ratio. The rows (one per downstream
job) come from MLflow (`tracking.downstream_runs`) or from the downstream stage's results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gammaface import figures, tables
from gammaface.tables import cell
from gammaface.downstream.mixing import BASELINE

GROUP = ["n_per_class", "method", "ratio"]
TABLE_FILE = "compare.md"
CSV_FILE = "compare.csv"
PLOT_FILE = "compare.png"


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
    cells = pd.DataFrame({"n/class": summary["n_per_class"].astype(int).astype(str),
                          "method": summary["method"],
                          "ratio": [f"{r:g}" for r in summary["ratio"]]})
    for m in labels:
        cells[f"{m} {arrows.get(m, '↓')}"] = [
            "n/a" if not np.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"
            for mean, std in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    intro = (f"Target `{target}`, protected `{key}`; mean ± std over seeds. B: Bias, BA: bias "
             "amplification (x100 as the paper prints it), BPC: bias-performance trade-off "
             "against the baseline of the same seed, KL: reference KL per binary protected "
             "attribute.")
    return intro + "\n\n" + tables.markdown(cells)


def write(summary: pd.DataFrame, target: str, key: str, out: Any) -> None:
    """Markdown, CSV and plot into a Store."""
    out.write_bytes(TABLE_FILE, markdown(summary, target, key).encode())
    out.write_bytes(CSV_FILE, summary.to_csv(index=False).encode())
    out.write_bytes(PLOT_FILE, figures.ratio_ablation(summary, BASELINE))


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
                     f"({cell(b['B_mean'])} -> {cell(g['B_mean'])}) and "
                     f"{'keeps' if acc_kept else 'loses'} accuracy "
                     f"({cell(b['Acc_mean'])} -> {cell(g['Acc_mean'])}).")
        controls = [m for m in ("gmm_weighted", "single_gaussian", "unconditional") if m in at.index]
        better = [m for m in controls if at.loc[m, "B_mean"] < g["B_mean"]]
        if better:
            lines.append(f"  The control(s) {', '.join(f'`{m}`' for m in better)} reach a lower "
                         "Bias than `gmm`, so the equal-count mixture is not what helps here.")
        elif controls:
            lines.append("  `gmm` has a lower Bias than every control "
                         f"({', '.join(f'`{m}`' for m in controls)}).")
        best = at["B_mean"].idxmin()
        lines.append(f"  Lowest Bias at this ratio: `{best}` ({cell(at.loc[best, 'B_mean'])}).")
    return lines
