"""The report's own figures (the other stages' figures are copied as they are)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gammaface.data import registry
from gammaface.viz import figure_png, pyplot


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
