"""Every matplotlib figure the package draws, as PNG bytes: the BIC curve, the balance of the
generated sets (and predicted against measured), the components' compositions, the dataset's
skew, per-group TPR and the mixing-ratio ablation."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from gammaface.data import registry


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout); the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def bic_curve(table: pd.DataFrame, chosen: int) -> bytes:
    """BIC and AIC against K (columns k, bic, aic), the chosen K starred."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(table["k"], table["bic"], "o-", label="BIC")
    ax.plot(table["k"], table["aic"], "s--", label="AIC", alpha=0.7)
    row = table[table["k"] == chosen]
    ax.plot(row["k"], row["bic"], "r*", markersize=14, label=f"chosen K = {chosen}")
    ax.set_xlabel("K (components)")
    ax.set_ylabel("criterion (lower is better)")
    ax.legend()
    return figure_png(fig)


def balance_bars(table: pd.DataFrame, protected: list[str]) -> bytes:
    """Fairness discrepancy of each set (rows of `table`) per protected attribute and their
    intersection, with the bootstrap std as error bars."""
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


def skew(train: pd.DataFrame) -> bytes:
    """Class shares of every attribute in the train split (a dashed line marks uniform)."""
    plt = pyplot()
    names = [a for a in registry.ATTRIBUTE_NAMES if train[a].notna().any()]
    fig, axes = plt.subplots(1, len(names), figsize=(2.1 * len(names), 2.6), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names):
        classes = registry.get(name).classes
        shares = train[name].value_counts(normalize=True).reindex(classes, fill_value=0.0)
        ax.bar(range(len(classes)), shares.to_numpy(), color="tab:blue")
        ax.axhline(1 / len(classes), color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(classes)), classes, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
    return figure_png(fig)


def group_tpr(tables: dict[str, pd.Series]) -> bytes:
    """Per-group TPR of several methods side by side (one bar group per protected group)."""
    plt = pyplot()
    groups = list(next(iter(tables.values())).index)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(groups), 3.0), dpi=110)
    width = 0.8 / len(tables)
    for i, (method, tpr) in enumerate(tables.items()):
        ax.bar(np.arange(len(groups)) + i * width, tpr.reindex(groups).to_numpy(), width,
               label=method)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20, fontsize=7)
    ax.set_ylabel("true positive rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return figure_png(fig)


def ratio_ablation(summary: pd.DataFrame, baseline: str) -> bytes:
    """Bias and accuracy (mean +/- std over seeds) against the generated share, one panel row
    per training-set size; every method's line starts at the `baseline` method's point."""
    plt = pyplot()
    sizes = sorted(summary["n_per_class"].unique())
    fig, axes = plt.subplots(len(sizes), 2, figsize=(9, 3.2 * len(sizes)), dpi=110, squeeze=False)
    for row, n in zip(axes, sizes):
        part = summary[summary["n_per_class"] == n]
        base = part[part["method"] == baseline]
        for ax, metric, name in ((row[0], "B", "Bias (lower is fairer)"),
                                 (row[1], "Acc", "accuracy")):
            for method, g in part[part["method"] != baseline].groupby("method"):
                g = pd.concat([base, g]).sort_values("ratio")
                ax.errorbar(g["ratio"], g[f"{metric}_mean"], yerr=g[f"{metric}_std"], marker="o",
                            capsize=2, label=method)
            if not base.empty:
                ax.axhline(base[f"{metric}_mean"].iloc[0], color="k", lw=0.8, ls=":",
                           label="baseline")
            ax.set_xlabel("generated share of the training set")
            ax.set_title(f"{name}, {n} per class", fontsize=9)
        row[0].legend(fontsize=7)
    return figure_png(fig)


def predicted_vs_measured(table: pd.DataFrame) -> bytes:
    """Each mixture method's balance predicted from the component compositions (x) against
    what its set measured (y): by the labeller with its bootstrap std, and by the judge with
    its 95 % interval. `table`: method, predicted, labeller, labeller_std, judge, judge_lo,
    judge_hi (NaN where a figure is missing). On the diagonal the prediction held."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    x = table["predicted"].to_numpy(float)
    ax.errorbar(x, table["labeller"], yerr=table["labeller_std"], fmt="o", capsize=2,
                label="labeller (± std)")
    lo = (table["judge"] - table["judge_lo"]).clip(lower=0)
    hi = (table["judge_hi"] - table["judge"]).clip(lower=0)
    ax.errorbar(x, table["judge"], yerr=[lo, hi], fmt="s", capsize=2, label="judge (95 %)")
    for xi, yi, name in zip(x, table["labeller"], table["method"]):
        ax.annotate(name, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    top = float(np.nanmax(np.concatenate([x, table["labeller"], table["judge_hi"]]))) * 1.1 or 1.0
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted discrepancy (from the compositions)")
    ax.set_ylabel("measured discrepancy")
    ax.legend(fontsize=7)
    return figure_png(fig)


def composition_heatmap(comp: pd.DataFrame) -> bytes:
    """Each component's share of every protected cell (rows: components; columns: cells)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * comp.shape[1], 1.2 + 0.4 * len(comp)), dpi=120)
    im = ax.imshow(comp.to_numpy(float), cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(np.arange(comp.shape[1]), comp.columns, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(np.arange(len(comp)), [f"k={k}" for k in comp.index], fontsize=7)
    ax.set_xlabel("protected cell")
    fig.colorbar(im, ax=ax, label="share of the component")
    return figure_png(fig)


def sweep_curves(table: pd.DataFrame) -> bytes:
    """The t* sweep: chosen K (left) and the NMI of component with gender and race (right)
    against t*, one line per harvest source and mixture space."""
    plt = pyplot()
    fig, (ax_k, ax_n) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=120)
    for (source, space), part in table.groupby(["source", "space"]):
        part = part.sort_values("t_star")
        label = f"{source}, {space}"
        ax_k.plot(part["t_star"], part["chosen_k"], "o-", label=label)
        for attr, style in (("gender", "-"), ("race", "--")):
            col = f"nmi_{attr}"
            if col in part and part[col].notna().any():
                ax_n.plot(part["t_star"], part[col].astype(float), "o" + style,
                          label=f"{label}: {attr}")
    ax_k.set_xlabel("t*")
    ax_k.set_ylabel("K chosen by BIC")
    ax_n.set_xlabel("t*")
    ax_n.set_ylabel("NMI (component, attribute)")
    ax_k.legend(fontsize=6)
    if ax_n.lines:
        ax_n.legend(fontsize=6)
    return figure_png(fig)
