"""The comparison of downstream arms: for every (size, arm, ratio) the difference of each metric
to the baseline trained from the same seed, with its 95 % interval, beside the levels (mean +/-
std over seeds) and a plot of Bias and accuracy against the ratio. The rows (one per downstream
job) come from MLflow (`tracking.downstream_runs`) or from the downstream stage's results.

The interval of a difference is the Student t interval over seeds; a group with one seed uses
the paired bootstrap over evaluation images the stage stored beside the job (`delta_low/...`,
`delta_high/...`), which covers the evaluation noise only. The verdict draws a conclusion only
from an interval that excludes 0, and none from fewer than `MIN_SEEDS` seeds.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import numpy as np
import pandas as pd

from gammaface.report import figures, tables
from gammaface.downstream import arms
from gammaface.downstream.arms import split_arm
from gammaface.downstream.mixing import BASELINE
from gammaface.metrics.intervals import Interval, seeds_for_half_width, t_interval

GROUP = ["n_per_class", "method", "ratio"]
PAIR = ["n_per_class", "seed"]
TABLE_FILE = "compare.md"
CSV_FILE = "compare.csv"
PLOT_FILE = "compare.png"
MIN_SEEDS = 3  # below this no verdict: a t interval from two seeds is too wide to mean much
DELTA, LOW, HIGH = "delta/", "delta_low/", "delta_high/"
TARGET_HALF_WIDTH = 0.02
# the metrics whose differences the stage also bootstraps over evaluation images
BOOTSTRAPPED = ("B", "Acc", "WTPR")
_ARROWS = {"B": "↓", "BA": "↓", "BA_x100": "↓", "Acc": "↑", "BPC": "↑", "WTPR": "↑", "TPR": "↑"}
_NAMES = {"B": "Bias", "Acc": "accuracy", "WTPR": "worst-group TPR", "TPR": "TPR", "BA": "BA",
          "BA_x100": "BA x100", "BPC": "BPC"}


def protected_columns(df: pd.DataFrame) -> tuple[str, list[str]]:
    """The intersection key and the binary protected attributes that have a KL."""
    protected = df["protected"].iloc[0].split(",")
    key = ":".join(protected)
    kl = [a for a in protected if f"kl_ref/{a}" in df.columns]
    return key, kl


def metric_columns(key: str, kl: list[str]) -> dict[str, str]:
    """Short label -> result column of every compared metric."""
    return {"B": f"bias/{key}", "Acc": "accuracy", "WTPR": f"worst_tpr/{key}", "TPR": "tpr",
            "BA": f"ba/{key}", "BA_x100": f"ba_x100/{key}", "BPC": f"bpc/{key}",
            **{f"KL_{a}": f"kl_ref/{a}" for a in kl}}


def paired_columns(key: str, kl: list[str]) -> dict[str, str]:
    """The metrics a difference to the baseline is reported for (BPC is one already)."""
    cols = metric_columns(key, kl)
    return {k: v for k, v in cols.items() if k not in ("BA_x100", "BPC")}


def with_differences(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each row with `delta/<col>`: its value minus that of the baseline of the same size and
    seed (NaN where that baseline is missing)."""
    present = [c for c in columns if c in df.columns]
    base = df[df["method"] == BASELINE].drop_duplicates(PAIR).set_index(PAIR)[present]
    aligned = base.reindex(pd.MultiIndex.from_frame(df[PAIR]))
    out = df.copy()
    for c in present:
        out[DELTA + c] = df[c].to_numpy(dtype=float) - aligned[c].to_numpy(dtype=float)
    return out


def _order(out: pd.DataFrame) -> pd.DataFrame:
    methods = list(dict.fromkeys(out["method"]))
    rank = {m: i for i, m in enumerate([BASELINE, *[m for m in methods if m != BASELINE]])}
    return out.sort_values(["n_per_class", "ratio", "method"], key=lambda s: s.map(rank)
                           if s.name == "method" else s).reset_index(drop=True)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (size, arm, ratio): seeds, mixing rule, `<m>_mean`/`<m>_std` of every level
    and `d<m>_mean`, `d<m>_std`, `d<m>_low`, `d<m>_high`, `d<m>_kind` of every difference."""
    key, kl = protected_columns(df)
    levels = {k: v for k, v in metric_columns(key, kl).items() if v in df.columns}
    paired = {k: v for k, v in paired_columns(key, kl).items() if v in df.columns}
    rows = with_differences(df, list(paired.values()))
    if "mixing" not in rows.columns:
        rows["mixing"] = ""
    out = []
    for (n, method, ratio), g in rows.groupby(GROUP, sort=False):
        rec: dict[str, Any] = {"n_per_class": n, "method": method, "ratio": ratio,
                               "mixing": str(g["mixing"].iloc[0]), "seeds": len(g)}
        for label, col in levels.items():
            rec[f"{label}_mean"] = g[col].mean()
            rec[f"{label}_std"] = g[col].std(ddof=1) if len(g) > 1 else 0.0
        for label, col in paired.items():
            iv = difference_interval(g, col)
            rec.update({f"d{label}_mean": iv.mean, f"d{label}_low": iv.low,
                        f"d{label}_high": iv.high, f"d{label}_kind": iv.kind,
                        f"d{label}_std": g[DELTA + col].std(ddof=1) if len(g) > 1 else np.nan})
        out.append(rec)
    return _order(pd.DataFrame(out))


def difference_interval(group: pd.DataFrame, col: str) -> Interval:
    """The interval of one arm's difference to its baseline: t over seeds, or with one seed the
    stored bootstrap bounds (NaN where there are none)."""
    values = group[DELTA + col].to_numpy(dtype=float)
    if group["method"].iloc[0] == BASELINE:
        return Interval(0.0, np.nan, np.nan, len(values), "reference")
    if len(values) >= 2:
        return t_interval(values)
    low, high = (group[p + col].iloc[0] if p + col in group.columns else np.nan
                 for p in (LOW, HIGH))
    mean = float(values[0]) if len(values) else np.nan
    if np.isfinite(low) and np.isfinite(high):
        return Interval(mean, float(low), float(high), 1, "bootstrap")
    return Interval(mean, np.nan, np.nan, len(values), "none")


def fmt_interval(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:+.4f}"
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def _difference_cells(summary: pd.DataFrame) -> pd.DataFrame:
    labels = [c[1:-5] for c in summary.columns if c.startswith("d") and c.endswith("_mean")]
    cells = _key_cells(summary)
    for m in labels:
        values = []
        for _, r in summary.iterrows():
            if r["method"] == BASELINE:
                values.append("reference")
                continue
            mark = " ᵇ" if r[f"d{m}_kind"] == "bootstrap" else ""
            values.append(fmt_interval(r[f"d{m}_mean"], r[f"d{m}_low"], r[f"d{m}_high"]) + mark)
        cells[f"Δ{m} {_ARROWS.get(m, '↓')}"] = values
    return cells


def _key_cells(summary: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"n/class": summary["n_per_class"].astype(int).astype(str),
                         "arm": summary["method"], "mixing": summary["mixing"],
                         "ratio": [f"{r:g}" for r in summary["ratio"]],
                         "seeds": summary["seeds"].astype(int).astype(str)})


def _level_cells(summary: pd.DataFrame) -> pd.DataFrame:
    labels = [c[:-5] for c in summary.columns if c.endswith("_mean") and not c.startswith("d")]
    cells = _key_cells(summary)
    for m in labels:
        cells[f"{m} {_ARROWS.get(m, '↓')}"] = [
            "n/a" if not np.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"
            for mean, std in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    return cells


def markdown(summary: pd.DataFrame, target: str, key: str) -> str:
    """The differences table, the levels table and the power line."""
    intro = (f"Target `{target}`, protected `{key}`. Each arm minus the baseline trained from the "
             "same seed on the same real images, scored on the same evaluation images: mean "
             "and 95 % interval (Student t over seeds; ᵇ: one seed, paired bootstrap over the "
             "evaluation images, which covers their noise only). B: Bias, WTPR: worst-group "
             "TPR, BA: bias amplification, KL: reference KL per binary protected attribute.")
    levels = ("Levels, mean ± std over seeds (BA x100 as the paper prints it; BPC: "
              "bias-performance trade-off against the baseline of the same seed).")
    return "\n\n".join([intro, tables.markdown(_difference_cells(summary)), levels,
                        tables.markdown(_level_cells(summary)), *power(summary)]) + "\n"


def power(summary: pd.DataFrame, half_width: float = TARGET_HALF_WIDTH) -> list[str]:
    """How precise the Bias differences are, and how many seeds the widest one would need for a
    half-width of `half_width` at the spread it shows."""
    arms = summary[(summary["method"] != BASELINE) & summary["dB_high"].notna()]
    if arms.empty or "dB_std" not in arms:
        return []
    widths = (arms["dB_high"] - arms["dB_low"]) / 2
    worst = arms.loc[widths.idxmax()]
    need = seeds_for_half_width(float(worst["dB_std"]), half_width)
    return [f"Half-width of the ΔB interval: median {widths.median():.4f}, widest "
            f"{widths.max():.4f} (`{worst['method']}` at ratio {worst['ratio']:g}, std of the "
            f"difference {worst['dB_std']:.4f} over {int(worst['seeds'])} seeds); a half-width "
            f"of {half_width:g} there needs "
            + (f"{need} seeds." if need else "more than 1000 seeds.")]


def write(summary: pd.DataFrame, target: str, key: str, out: Any) -> None:
    """Markdown, CSV and plot into a Store."""
    out.write_bytes(TABLE_FILE, markdown(summary, target, key).encode())
    out.write_bytes(CSV_FILE, summary.to_csv(index=False).encode())
    out.write_bytes(PLOT_FILE, figures.ratio_ablation(summary, BASELINE))


def _iv(r: pd.Series, label: str) -> Interval:
    return Interval(r[f"d{label}_mean"], r[f"d{label}_low"], r[f"d{label}_high"],
                    int(r["seeds"]), str(r[f"d{label}_kind"]))


def _text(iv: Interval) -> str:
    return fmt_interval(iv.mean, iv.low, iv.high)


def _side(iv: Interval, below: str, above: str, neither: str) -> str:
    """The words for an interval wholly below 0, wholly above it, or holding it."""
    return below if iv.below() else above if iv.above() else neither


def bias_sentence(arm: str, ratio: float, bias: Interval, accuracy: Interval, seeds: int) -> str:
    """One arm's verdict: a direction only where the interval of its Bias difference excludes
    0 and at least `MIN_SEEDS` seeds stand behind it."""
    head = f"`{arm}` at ratio {ratio:g}"
    if seeds < MIN_SEEDS:
        return (f"{head}: cannot tell, with {seeds} seed{'s' if seeds != 1 else ''} (fewer than "
                f"{MIN_SEEDS}); the Bias difference is {_text(bias)}.")
    if not (bias.below() or bias.above()):
        return (f"{head}: cannot tell whether it changes Bias; the difference {_text(bias)} "
                f"includes 0 (accuracy {_text(accuracy)}).")
    what = _side(bias, f"reduces Bias by {-bias.mean:.4f}", f"increases Bias by {bias.mean:.4f}",
                 "")
    cost = _side(accuracy, f"at an accuracy cost of {-accuracy.mean:.4f}",
                 f"with an accuracy gain of {accuracy.mean:.4f}",
                 "with no accuracy change beyond its interval")
    what, cost = f"{what} ({_text(bias)})", f"{cost} ({_text(accuracy)})"
    return f"{head} {what}, {cost}."


def versus(df: pd.DataFrame, arm: str, other: str, n: int, ratio: float, col: str) -> Interval:
    """t interval of `arm` minus `other` on `col`, paired by seed at one size and ratio."""
    at = df[(df["n_per_class"] == n) & (df["ratio"] == ratio)]
    a = at[at["method"] == arm].set_index("seed")[col]
    b = at[at["method"] == other].set_index("seed")[col]
    both = a.index.intersection(b.index)
    return t_interval((a[both] - b[both]).to_numpy(dtype=float))


def verdict(df: pd.DataFrame, summary: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences for every arm against its baseline, every generated arm against
    `oversample`, and which arms, if any, reduce Bias beyond their interval."""
    summary = summarise(df) if summary is None else summary
    key, _ = protected_columns(df)
    bias_col = metric_columns(key, [])["B"]
    lines, reducing = [], []
    for n, part in summary.groupby("n_per_class"):
        lines.append(f"With {n} real images per class:")
        for _, r in part[part["method"] != BASELINE].iterrows():
            bias = _iv(r, "B")
            lines.append("- " + bias_sentence(r["method"], r["ratio"], bias, _iv(r, "Acc"),
                                              int(r["seeds"])))
            if bias.below() and r["seeds"] >= MIN_SEEDS:
                reducing.append(f"`{r['method']}` at {r['ratio']:g}")
        for _, r in part[part["method"] != BASELINE].iterrows():
            source = split_arm(r["method"])[0]
            if arms.is_control(source) or not (part["method"] == "oversample").any():
                continue
            if not ((part["method"] == "oversample") & (part["ratio"] == r["ratio"])).any():
                continue
            iv = versus(df, r["method"], "oversample", n, r["ratio"], bias_col)
            head = f"`{r['method']}` against `oversample` at ratio {r['ratio']:g}"
            if iv.n < MIN_SEEDS:
                lines.append(f"- {head}: cannot tell, with {iv.n} paired seeds.")
            elif iv.below():
                lines.append(f"- {head}: beats it, Bias lower by {-iv.mean:.4f} ({_text(iv)}).")
            elif iv.above():
                lines.append(f"- {head}: `oversample` is fairer, by {iv.mean:.4f} ({_text(iv)}).")
            else:
                lines.append(f"- {head}: cannot tell them apart ({_text(iv)} includes 0).")
    lines.append("Arms that reduce Bias beyond their 95 % interval: "
                 + (", ".join(reducing) if reducing else "none") + ".")
    return lines


def paired_scores(jobs: list[tuple[Hashable, bool, pd.DataFrame, int]],
                  evaluate: Callable[[pd.DataFrame, dict[str, float] | None], dict[str, float]],
                  protected: list[str], binary: bool) -> list[dict[str, float]]:
    """Each job's metrics, in the jobs' order, every arm paired with its baseline: the baseline
    trained on the same real images from the same seed (the same `pair` key). A job is
    (pair, is_baseline, predictions, bootstrap seed); `evaluate(predictions, baseline's
    metrics or None)` scores one. An arm whose pair has a baseline also gets the paired
    bootstrap bounds of its differences to the baseline's predictions on the same evaluation
    images (`bootstrap_differences`). Baselines are scored first, whatever the order."""
    base_metrics: dict[Hashable, dict[str, float]] = {}
    base_preds: dict[Hashable, pd.DataFrame] = {}
    scored: dict[int, dict[str, float]] = {}
    for i in sorted(range(len(jobs)), key=lambda i: not jobs[i][1]):
        pair, is_baseline, pred, seed = jobs[i]
        metrics = evaluate(pred, None if is_baseline else base_metrics.get(pair))
        if is_baseline:
            base_metrics[pair], base_preds[pair] = metrics, pred
        elif pair in base_preds:
            metrics.update(bootstrap_differences(
                pred["y_true"].to_numpy(), pred["y_pred"].to_numpy(),
                base_preds[pair]["y_pred"].to_numpy(), {a: pred[a].to_numpy() for a in protected},
                binary, seed))
        scored[i] = metrics
    return [scored[i] for i in range(len(jobs))]


def bootstrap_differences(y_true: np.ndarray, arm: np.ndarray, base: np.ndarray,
                          protected: dict[str, np.ndarray], binary: bool, seed: int,
                          repeat: int = 1000) -> dict[str, float]:
    """Paired bootstrap bounds over evaluation images of the arm's Bias, accuracy and
    worst-group TPR differences to its baseline (both prediction sets resampled together), as
    `delta_low/<col>` and `delta_high/<col>`."""
    from gammaface.metrics import fairness as F
    from gammaface.metrics.evaluate import intersection_labels
    from gammaface.metrics.intervals import paired_bootstrap

    codes, _ = intersection_labels(protected)
    key = ":".join(protected)
    average = "binary" if binary else "macro"
    yt, ya, yb = (np.asarray(a) for a in (y_true, arm, base))

    def worst(yp: np.ndarray, rows: np.ndarray) -> float:
        tprs = np.array(list(F.group_tpr(yt[rows], yp[rows], codes[rows], average).values()))
        tprs = tprs[np.isfinite(tprs)]
        return float(tprs.min()) if len(tprs) else np.nan

    stats = {f"bias/{key}": lambda yp, rows: F.bias(yt[rows], yp[rows], codes[rows], average),
             "accuracy": lambda yp, rows: float(np.mean(yt[rows] == yp[rows])),
             f"worst_tpr/{key}": worst}
    out = {}
    for i, (col, f) in enumerate(stats.items()):
        iv = paired_bootstrap(lambda rows: f(ya, rows) - f(yb, rows), len(yt), seed + i, repeat)
        out[LOW + col], out[HIGH + col] = iv.low, iv.high
    return out
