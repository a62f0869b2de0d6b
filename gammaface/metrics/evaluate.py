"""Every fairness metric of one classifier in one flat dict: what stages log and reports print.

Keys are `metric` for overall values and `metric/<protected>` per protected attribute, with
`<protected>` one attribute name or the intersection of several joined by `:` (e.g.
`age:gender`). Per-group values are `tpr/<protected>/<group>`, `accuracy/<protected>/<group>` and
`n/<protected>/<group>` (an intersection group is named like `old:female`), and
`worst_tpr/<protected>` is the lowest group TPR. Every key is a valid MLflow metric name.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import pandas as pd

from gammaface.metrics import fairness as F
from gammaface.metrics import validation as v

INTERSECTION_SEP = ":"
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :]")
BA_SCALE = 100.0  # the gan-debiasing evaluation prints 100 * BA


def intersection_labels(protected: Mapping[str, object]) -> tuple[np.ndarray, list[str]]:
    """One integer label per sample for the combination of several protected attributes.

    Returns the codes and a readable name per code (values joined by `:`, in the given order).
    """
    if not protected:
        raise ValueError("at least one protected attribute is needed.")
    for name in protected:
        if _UNSAFE.search(name) or INTERSECTION_SEP in name:
            raise ValueError(f"protected attribute name {name!r} may use only letters, digits, "
                             "'_', '-', '.' and spaces.")
    columns = [np.asarray(a, dtype=object) for a in protected.values()]
    n = v.same_length(**{k: c for k, c in zip(protected, columns)})
    for name, col in zip(protected, columns):
        nulls = pd.isna(col)
        if nulls.any():
            raise ValueError(f"protected attribute {name!r} is missing at index {int(nulls.argmax())}.")
    keys = [INTERSECTION_SEP.join(_UNSAFE.sub("_", str(c[i])) for c in columns) for i in range(n)]
    names, codes = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    return codes.reshape(-1).astype(np.int64), [str(x) for x in names]


def _group_codes(values: object, name: str) -> tuple[np.ndarray, list[str]]:
    return intersection_labels({name: values})


def _views(protected: Mapping[str, object]) -> dict[str, tuple[np.ndarray, list[str]]]:
    views = {name: _group_codes(values, name) for name, values in protected.items()}
    if len(protected) > 1:
        views[INTERSECTION_SEP.join(protected)] = intersection_labels(protected)
    return views


def _one_hot(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return (np.asarray(values, dtype=object)[:, None]
            == np.asarray(levels, dtype=object)[None, :]).astype(np.int64)


def _ba(yt: np.ndarray, yp: np.ndarray, codes: np.ndarray, names: list[str],
        train: tuple[np.ndarray, np.ndarray, list[str]] | None) -> float:
    """BA A -> T; its directions from the training labels when given. On an evaluation set with
    equal cells the target is independent of every group, so directions estimated there are all
    0 and BA would be 0 for any classifier."""
    if train is None:
        return F.ba_a_to_t(yt, yp, codes)
    train_y, train_codes, train_names = train
    classes = np.unique(np.concatenate([yt, yp]))
    levels = np.array(sorted(set(names) | set(train_names)), dtype=object)
    groups = np.asarray(names, dtype=object)[codes]
    train_groups = np.asarray(train_names, dtype=object)[train_codes]
    return F.ba_a_to_t_multilabel(_one_hot(yt, classes), _one_hot(groups, levels),
                                  _one_hot(yp, classes), _one_hot(train_y, classes),
                                  _one_hot(train_groups, levels))


def evaluate(y_true: object, y_pred: object, scores: object | None,
             protected: Mapping[str, object], baseline: Mapping[str, float] | None = None,
             train: tuple[object, Mapping[str, object]] | None = None) -> dict[str, float]:
    """Accuracy, TPR, Bias, worst-group TPR, BA (raw and x100), DEO, KL (reference and fixed
    range), per-group TPR and accuracy, for each protected attribute and their intersection; BPC against
    `baseline` (another result of this function) when given. `train` (the training set's target
    labels and protected attributes) gives BA its directions, as Wang & Russakovsky estimate
    them; without it they come from the evaluation labels.

    Binary targets use the binary TPR (recall of class 1); multi-class targets the macro TPR and
    the class-wise Bias beside it. DEO and KL need a binary target and a binary group.
    """
    yt, yp = v.labels(y_true, "y_true"), v.labels(y_pred, "y_pred")
    s = v.scores(scores) if scores is not None else None
    v.same_length(y_true=yt, y_pred=yp, **({"scores": s} if s is not None else {}))
    binary = set(np.unique(np.concatenate([yt, yp]))) <= {0, 1}
    average = "binary" if binary else "macro"
    out: dict[str, float] = {
        "n": float(len(yt)),
        "accuracy": float(np.mean(yt == yp)) if len(yt) else F.NAN,
        "tpr": F.tpr(yt, yp, average=average),
    }
    train_views = None
    if train is not None:
        train_y = v.labels(train[0], "train labels")
        train_views = _views(train[1])
    for key, (codes, names) in _views(protected).items():
        v.same_length(y_true=yt, **{key: codes})
        out[f"bias/{key}"] = F.bias(yt, yp, codes, average=average)
        if not binary:
            out[f"bias_classwise/{key}"] = F.bias_classwise(yt, yp, codes)
        ba = _ba(yt, yp, codes, names,
                 None if train_views is None else (train_y, *train_views[key]))
        out[f"ba/{key}"] = ba
        out[f"ba_x100/{key}"] = ba * BA_SCALE
        if binary and len(names) == 2:
            out[f"deo/{key}"] = F.deo(yt, yp, codes)
            if s is not None:
                out[f"kl_ref/{key}"] = F.kl_ref(s, yt, codes)
                out[f"kl_fixed_range/{key}"] = F.kl_sym_fixed_range(s, yt, codes, target_class=1)
        tprs = F.group_tpr(yt, yp, codes, average=average)
        finite = np.asarray(list(tprs.values()), dtype=float)
        finite = finite[np.isfinite(finite)]
        # the group the model serves worst, beside the gap (Bias) that a uniformly worse model
        # can shrink
        out[f"worst_tpr/{key}"] = float(finite.min()) if len(finite) else F.NAN
        for i, name in enumerate(names):
            in_group = codes == i
            out[f"tpr/{key}/{name}"] = tprs[i]
            out[f"accuracy/{key}/{name}"] = float(np.mean(yt[in_group] == yp[in_group]))
            out[f"n/{key}/{name}"] = float(in_group.sum())
        if baseline is not None:
            out[f"bpc/{key}"] = F.bpc(baseline.get(f"bias/{key}", F.NAN), out[f"bias/{key}"],
                                      baseline.get("tpr", F.NAN), out["tpr"])
    return out


def per_group_table(result: Mapping[str, float], key: str) -> pd.DataFrame:
    """Rows = groups of one protected attribute (or intersection); columns n, tpr, accuracy."""
    rows: dict[str, dict[str, float]] = {}
    for metric in ("n", "tpr", "accuracy"):
        prefix = f"{metric}/{key}/"
        for k, value in result.items():
            if k.startswith(prefix):
                rows.setdefault(k[len(prefix):], {})[metric] = value
    return pd.DataFrame.from_dict(rows, orient="index", columns=["n", "tpr", "accuracy"])
