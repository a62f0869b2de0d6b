"""Fairness metrics of a classifier, exactly as METRICS.md defines them.

Undefined values are NaN; malformed input raises ValueError. The BA and KL definitions follow the
public evaluation code of Wang & Russakovsky and Ramaswamy et al., quirks included, so numbers
are comparable with tables computed by that code.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter1d

from gammaface.metrics import validation as v

NAN = float("nan")
KL_BINS = 50
KL_SIGMA = 1.0
KL_EPS = 1e-6
_BOOTSTRAP_CHUNK = 64  # repetitions resampled at once; bounds memory at chunk x n


# --- TPR and Bias (eq. 12) -----------------------------------------------------------------------

def _encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, codes = np.unique(x, return_inverse=True)
    return values, codes.reshape(-1)


def _checked_pair(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = v.labels(y_true, "y_true"), v.labels(y_pred, "y_pred")
    v.same_length(y_true=yt, y_pred=yp)
    return yt, yp


def _checked(y_true: object, y_pred: object, groups: object
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yt, yp = v.labels(y_true, "y_true"), v.labels(y_pred, "y_pred")
    g = v.labels(groups, "groups")
    v.same_length(y_true=yt, y_pred=yp, groups=g)
    return yt, yp, g


def _check_average(average: str) -> None:
    if average not in ("binary", "macro"):
        raise ValueError(f"average must be 'binary' or 'macro', got {average!r}.")


def _recall_table(yt: np.ndarray, yp: np.ndarray, gcodes: np.ndarray, n_groups: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (group, class): number of samples of that class and number recalled."""
    classes, ccodes = _encode(yt)
    n_c = len(classes)
    cell = gcodes * n_c + ccodes
    total = np.bincount(cell, minlength=n_groups * n_c).reshape(n_groups, n_c)
    hit = np.bincount(cell[yt == yp], minlength=n_groups * n_c).reshape(n_groups, n_c)
    return classes, total, hit


def _group_tpr(yt: np.ndarray, yp: np.ndarray, gcodes: np.ndarray, n_groups: int,
               average: str) -> np.ndarray:
    """TPR of every group (NaN where undefined), binary or macro over classes present."""
    if average == "binary":
        pos = yt == 1
        n_pos = np.bincount(gcodes[pos], minlength=n_groups)
        tp = np.bincount(gcodes[pos & (yp == 1)], minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_pos > 0, tp / np.maximum(n_pos, 1), NAN)
    if len(yt) == 0:
        return np.full(n_groups, NAN)
    _, total, hit = _recall_table(yt, yp, gcodes, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, hit / np.maximum(total, 1), np.nan)
        present = (total > 0).sum(axis=1)
        return np.where(present > 0, np.nansum(recall, axis=1) / np.maximum(present, 1), NAN)


def tpr(y_true: object, y_pred: object, average: str = "binary") -> float:
    """Recall of class 1 ('binary') or mean recall over the classes in y_true ('macro')."""
    _check_average(average)
    yt, yp = _checked_pair(y_true, y_pred)
    return float(_group_tpr(yt, yp, np.zeros(len(yt), np.int64), 1, average)[0])


def _pairwise_bias(tprs: np.ndarray, weights: np.ndarray) -> float:
    keep = ~np.isnan(tprs)
    t, w = tprs[keep], weights[keep]
    if len(t) < 2:
        return NAN
    iu = np.triu_indices(len(t), k=1)
    ww = np.outer(w, w)[iu]
    gaps = np.abs(t[:, None] - t[None, :])[iu]
    return float((gaps * ww).sum() / ww.sum())


def bias(y_true: object, y_pred: object, groups: object, average: str = "binary") -> float:
    """Weighted mean absolute TPR gap over pairs of subgroups (the paper's eq. 12)."""
    _check_average(average)
    yt, yp, g = _checked(y_true, y_pred, groups)
    _, gcodes = _encode(g)
    n_groups = int(gcodes.max()) + 1 if len(gcodes) else 0
    tprs = _group_tpr(yt, yp, gcodes, n_groups, average)
    weights = np.bincount(gcodes, minlength=n_groups) / max(len(g), 1)
    return _pairwise_bias(tprs, weights)


def bias_classwise(y_true: object, y_pred: object, groups: object) -> float:
    """One-vs-rest binary Bias of each class of a multi-class target, averaged where defined."""
    yt, yp, g = _checked(y_true, y_pred, groups)
    values = [bias((yt == c).astype(np.int64), (yp == c).astype(np.int64), g)
              for c in np.unique(yt)]
    values = [b for b in values if not np.isnan(b)]
    return float(np.mean(values)) if values else NAN


def group_tpr(y_true: object, y_pred: object, groups: object, average: str = "binary"
              ) -> dict[int, float]:
    """TPR of every subgroup, keyed by group label (NaN where undefined)."""
    _check_average(average)
    yt, yp, g = _checked(y_true, y_pred, groups)
    values, gcodes = _encode(g)
    tprs = _group_tpr(yt, yp, gcodes, len(values), average)
    return {int(k): float(t) for k, t in zip(values, tprs)}


# --- BPC (eq. 13) --------------------------------------------------------------------------------

def bpc(bias_base: float, bias_deb: float, perf_base: float, perf_deb: float) -> float:
    """Relative bias reduction minus relative performance loss; higher is better."""
    vals = [float(x) for x in (bias_base, bias_deb, perf_base, perf_deb)]
    if any(np.isnan(x) for x in vals) or vals[0] == 0 or vals[2] == 0:
        return NAN
    bb, bd, pb, pd = vals
    return (bb - bd) / bb - (pb - pd) / pb


# --- BA: directional bias amplification A -> T ----------------------------------------------------

def _ba_from_counts(n_true: np.ndarray, n_pred: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """BA A->T of single-label data from counts shaped (batch, groups, classes).

    `seen[b, c]` marks the classes present in y_true or y_pred of batch b; the direction uses
    integer counts so that an exact independence gives direction 0.
    """
    n = n_true.sum(axis=(1, 2))[:, None, None]
    n_g = n_true.sum(axis=2, keepdims=True)
    n_c = n_true.sum(axis=1, keepdims=True)
    direction = np.sign(n_true * n - n_g * n_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(n_g > 0, (n_pred - n_true) / np.maximum(n_g, 1), np.nan)
    valid = (n_g > 0) & seen[:, None, :]
    total = np.where(valid, direction * np.nan_to_num(delta), 0.0).sum(axis=(1, 2))
    count = valid.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def ba_a_to_t_multilabel(task_labels: object, attribute_labels: object, task_preds: object,
                         task_labels_train: object | None = None,
                         attribute_labels_train: object | None = None) -> float:
    """Directional bias amplification A -> T on 0/1 matrices (Wang & Russakovsky 2021)."""
    t = v.matrix01(task_labels, "task_labels")
    a = v.matrix01(attribute_labels, "attribute_labels")
    p = v.matrix01(task_preds, "task_preds")
    if p.shape != t.shape:
        raise ValueError(f"task_preds has shape {p.shape} but task_labels has {t.shape}.")
    v.same_length(task_labels=t, attribute_labels=a)
    if (task_labels_train is None) != (attribute_labels_train is None):
        raise ValueError("give both task_labels_train and attribute_labels_train, or neither.")
    if task_labels_train is not None:
        tr = v.matrix01(task_labels_train, "task_labels_train")
        ar = v.matrix01(attribute_labels_train, "attribute_labels_train")
        v.same_length(task_labels_train=tr, attribute_labels_train=ar)
        if tr.shape[1] != t.shape[1] or ar.shape[1] != a.shape[1]:
            raise ValueError("the training matrices must have as many columns as the test ones.")
    else:
        tr, ar = t, a
    keep = tr.any(axis=1) | ar.any(axis=1)
    tk, ak = tr[keep], ar[keep]
    m = len(tk)
    direction = np.sign(ak.T @ tk * m - np.outer(ak.sum(0), tk.sum(0)))
    n_a = a.sum(axis=0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(n_a > 0, (a.T @ p - a.T @ t) / np.maximum(n_a, 1), np.nan)
    valid = ~np.isnan(delta)
    if not valid.any():
        return NAN
    return float((direction * np.nan_to_num(delta))[valid].mean())


def _one_hot_counts(gcodes: np.ndarray, ccodes: np.ndarray, n_groups: int, n_classes: int
                    ) -> np.ndarray:
    """Counts per (batch, group, class); rows of 2-D code arrays are separate batches."""
    g2, c2 = np.atleast_2d(gcodes), np.atleast_2d(ccodes)
    batch = g2.shape[0]
    cells = n_groups * n_classes
    flat = (np.arange(batch)[:, None] * cells + g2 * n_classes + c2).ravel()
    return np.bincount(flat, minlength=batch * cells).reshape(batch, n_groups, n_classes)


def _ba_single(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, index_rows: np.ndarray) -> np.ndarray:
    """BA A->T for each row of `index_rows` (a batch of resamples, or one identity row)."""
    classes = np.union1d(yt, yp)
    tc, pc = np.searchsorted(classes, yt), np.searchsorted(classes, yp)
    gvals, gcodes = _encode(g)
    n_g, n_c = len(gvals), len(classes)
    n_true = _one_hot_counts(gcodes[index_rows], tc[index_rows], n_g, n_c)
    n_pred = _one_hot_counts(gcodes[index_rows], pc[index_rows], n_g, n_c)
    seen = (n_true.sum(axis=1) + n_pred.sum(axis=1)) > 0
    return _ba_from_counts(n_true, n_pred, seen)


def ba_a_to_t(y_true: object, y_pred: object, groups: object) -> float:
    """Single-label BA A->T: tasks one-hot over the classes seen, attributes over the groups."""
    yt, yp, g = _checked(y_true, y_pred, groups)
    if len(yt) == 0:
        return NAN
    return float(_ba_single(yt, yp, g, np.arange(len(yt))[None, :])[0])


# --- KL of score distributions (eq. 15) ----------------------------------------------------------

def _reference_hist(x: np.ndarray) -> np.ndarray | None:
    """50 bins over the array's own range; smoothing on integer counts truncates (reference)."""
    counts, _ = np.histogram(x, bins=KL_BINS)
    smoothed = gaussian_filter1d(counts, KL_SIGMA, mode="reflect", truncate=4.0)
    return _normalise(smoothed)


def _fixed_range_hist(x: np.ndarray) -> np.ndarray | None:
    counts, _ = np.histogram(x, bins=KL_BINS, range=(0.0, 1.0))
    smoothed = gaussian_filter1d(counts.astype(np.float64), KL_SIGMA, mode="reflect", truncate=4.0)
    return _normalise(smoothed)


def _normalise(h: np.ndarray) -> np.ndarray | None:
    total = h.sum()
    if total == 0:
        return None
    return h / total + KL_EPS


def _kl(p: np.ndarray | None, q: np.ndarray | None) -> float:
    if p is None or q is None:
        return NAN
    nz = p != 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def _kl_inputs(scores: object, y_true: object, groups: object
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = v.scores(scores)
    yt = v.labels(y_true, "y_true")
    g = v.binary_groups(v.labels(groups, "groups"))
    v.same_length(scores=s, y_true=yt, groups=g)
    return s, yt, g


def _directional(s: np.ndarray, yt: np.ndarray, g: np.ndarray, target_class: int,
                 hist=_reference_hist) -> list[float]:
    p0 = hist(s[(g == 0) & (yt == target_class)])
    p1 = hist(s[(g == 1) & (yt == target_class)])
    return [_kl(p0, p1), _kl(p1, p0)]


def kl_directional(scores: object, y_true: object, groups: object, target_class: int) -> list[float]:
    """[KL(P_0 || P_1), KL(P_1 || P_0)] of the score histograms of class `target_class`."""
    return _directional(*_kl_inputs(scores, y_true, groups), target_class)


def kl_sym(scores: object, y_true: object, groups: object, target_class: int) -> float:
    """Symmetric KL of the two groups' score histograms (the paper's eq. 15)."""
    return float(sum(kl_directional(scores, y_true, groups, target_class)))


def kl_ref(scores: object, y_true: object, groups: object) -> float:
    """Median of the four directional values for target classes 1 and 0 (published tables)."""
    s, yt, g = _kl_inputs(scores, y_true, groups)
    return float(np.median(_directional(s, yt, g, 1) + _directional(s, yt, g, 0)))


def kl_sym_fixed_range(scores: object, y_true: object, groups: object, target_class: int) -> float:
    """Symmetric KL with shared [0, 1] bins and float smoothing: sees pure location shifts."""
    s, yt, g = _kl_inputs(scores, y_true, groups)
    return float(sum(_directional(s, yt, g, target_class, hist=_fixed_range_hist)))


# --- DEO and threshold ---------------------------------------------------------------------------

def _deo_from_counts(n_pos: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """|recall_0 - recall_1| with recall 0 for a group without positives; shape (batch, 2)."""
    recall = np.where(n_pos > 0, tp / np.maximum(n_pos, 1), 0.0)
    return np.abs(recall[:, 0] - recall[:, 1])


def _deo_counts(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, index_rows: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    batch = index_rows.shape[0]
    pos, hit = (yt == 1)[index_rows], ((yt == 1) & (yp == 1))[index_rows]
    cell = (np.arange(batch)[:, None] * 2 + g[index_rows])
    n_pos = np.bincount(cell[pos], minlength=2 * batch).reshape(batch, 2)
    tp = np.bincount(cell[hit], minlength=2 * batch).reshape(batch, 2)
    return n_pos, tp


def deo(y_true: object, y_pred: object, groups: object) -> float:
    """Difference in equal opportunity |TPR_0 - TPR_1| of a binary group (reference)."""
    yt, yp, g = _checked(y_true, y_pred, groups)
    v.binary_groups(g)
    return float(_deo_from_counts(*_deo_counts(yt, yp, g, np.arange(len(yt))[None, :]))[0])


def calibrated_threshold(y_true: object, scores: object) -> float:
    """The k-th largest score, k = number of positives (the smallest score when k = 0)."""
    yt = v.labels(y_true, "y_true")
    s = v.scores(scores)
    v.same_length(y_true=yt, scores=s)
    if len(s) == 0:
        return NAN
    k = int((yt == 1).sum())
    ordered = np.sort(s)[::-1]
    return float(ordered[k - 1] if k > 0 else ordered[-1])


# --- Bootstrap intervals -------------------------------------------------------------------------

def _resamples(n: int, seed: int, repeat: int) -> Iterator[np.ndarray]:
    """Chunks of index rows; one draw of n indices per repetition, in order, one generator."""
    rng = np.random.RandomState(seed)
    for start in range(0, repeat, _BOOTSTRAP_CHUNK):
        rows = min(_BOOTSTRAP_CHUNK, repeat - start)
        yield np.stack([rng.randint(0, n, n) for _ in range(rows)])


def _median_std(values: np.ndarray) -> list[float]:
    if values.size == 0:
        return [NAN, NAN]
    return [float(np.median(values)), float(np.std(values))]


def bootstrap(metric, arrays: tuple[np.ndarray, ...], seed: int, repeat: int = 500) -> list[float]:
    """[median, std] of any metric over resamples, one repetition at a time.

    The resamples are those of the vectorised bootstraps below (one generator seeded once, one
    draw of n indices per repetition); a metric returning a list pools its values.
    """
    rng = np.random.RandomState(seed)
    n = len(arrays[0])
    values: list[float] = []
    for _ in range(repeat):
        idx = rng.randint(0, n, n)
        out = metric(*(np.asarray(a)[idx] for a in arrays))
        values.extend(out if isinstance(out, list) else [out])
    return _median_std(np.asarray(values, dtype=np.float64))


def ba_bootstrap(y_true: object, y_pred: object, groups: object, seed: int, repeat: int = 500
                 ) -> list[float]:
    """[median, std] of BA A->T over `repeat` resamples."""
    yt, yp, g = _checked(y_true, y_pred, groups)
    if len(yt) == 0:
        return [NAN, NAN]
    values = [_ba_single(yt, yp, g, idx) for idx in _resamples(len(yt), seed, repeat)]
    return _median_std(np.concatenate(values) if values else np.array([]))


def deo_bootstrap(y_true: object, y_pred: object, groups: object, seed: int, repeat: int = 500
                  ) -> list[float]:
    """[median, std] of DEO over `repeat` resamples."""
    yt, yp, g = _checked(y_true, y_pred, groups)
    v.binary_groups(g)
    if len(yt) == 0:
        return [NAN, NAN]
    values = [_deo_from_counts(*_deo_counts(yt, yp, g, idx))
              for idx in _resamples(len(yt), seed, repeat)]
    return _median_std(np.concatenate(values) if values else np.array([]))


def kl_bootstrap(scores: object, y_true: object, groups: object, seed: int, repeat: int = 500
                 ) -> list[float]:
    """[median, std] of the pooled four directional KL values over `repeat` resamples."""
    s, yt, g = _kl_inputs(scores, y_true, groups)
    if len(s) == 0:
        return [NAN, NAN]
    pool: list[float] = []
    for chunk in _resamples(len(s), seed, repeat):
        for idx in chunk:
            ss, tt, gg = s[idx], yt[idx], g[idx]
            pool += _directional(ss, tt, gg, 1) + _directional(ss, tt, gg, 0)
    return _median_std(np.asarray(pool))
