"""The training set of one downstream job: real and generated images at a mixing ratio.

An arm of the comparison is `baseline`, a generated set (a `generate.methods` name, mixed by
`downstream.mixing` or by the rule after its `:`), or a control that needs no generator. Per
target class, with n = `n_per_class` and r the ratio:

- `augment` (the paper's protocol): the n real images of the baseline of the same seed are all
  kept and round(n r / (1 - r)) generated ones (pseudo-labelled with the class, confidence at
  least `label.min_confidence`) are added, so that they make r of the set; r = 1 is n generated
  images and no real one.
- `replace`: the set's size is held at n; round(r n) generated images take the place of real
  ones. For one seed the real images at a higher ratio are a subset of those at a lower one.
- `fill`: as many images as `augment` adds, chosen by their pseudo-labels (target and every
  protected attribute confident) so that the class's protected cells come as close to equal
  counts as the generated pool allows: the lowest cells are raised first (water-filling),
  distinct images before any is repeated.
- `oversample`: the same cell counts as an unlimited `fill` would reach, made of repeats of the
  job's own real images of each cell (a cell with no real image stays short).
- `reweight`: every real image once, with a loss weight that gives each cell the share it has
  under `oversample` (weights have mean 1 over the set).

The real images of every arm of a (size, seed) are those of its baseline, drawn by the same
seeded permutation, so a difference to the baseline is paired.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, cast

import numpy as np
import pandas as pd

from gammaface.classifiers.labels import conf_column
from gammaface.config import ARM_SEP, CONTROL_ARMS, Config, split_arm
from gammaface.data import registry
from gammaface.data.cells import cell_codes, cells
from gammaface.errors import UserError
from gammaface.generate.methods import Input, method_key
from gammaface.seeds import seed_of

BASELINE = "baseline"
SOURCES = ("real", "generated", "oversampled")
NO_MIXING = "none"  # the baseline's rule
_UNLIMITED = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class Job:
    n_per_class: int
    method: str  # the arm as the config names it: baseline, a set, `set:rule` or a control
    ratio: float
    seed: int
    mixing: str = "augment"  # the rule in force: augment, replace, fill, a control, or none

    @property
    def source(self) -> str:
        """The generated set the job draws from (or baseline, or the control's name)."""
        return split_arm(self.method)[0]

    @property
    def generated_set(self) -> str | None:
        return None if self.source == BASELINE or self.source in CONTROL_ARMS else self.source

    @property
    def folder(self) -> str:
        return f"n{self.n_per_class}/{self.method.replace(ARM_SEP, '-')}/{self.ratio:g}/seed{self.seed}"

    @property
    def name(self) -> str:
        return f"{self.method} r={self.ratio:g} seed={self.seed} n={self.n_per_class}"


def rule_of(method: str, default: str) -> str:
    source, rule = split_arm(method)
    if source == BASELINE:
        return NO_MIXING
    if source in CONTROL_ARMS:
        return source
    return rule or default


def jobs(n_per_class: list[int], methods: list[str], ratios: list[float], seeds: int,
         mixing: str = "augment") -> list[Job]:
    """Every (size, arm, ratio, seed). Ratio 0 holds no generated image, so it is the baseline's
    alone and the baseline is trained only there; a control is defined only where real images
    stay and something is added (0 < ratio < 1)."""
    out = []
    for n in n_per_class:
        for s in range(seeds):
            if BASELINE in methods:
                out.append(Job(n, BASELINE, 0.0, s, NO_MIXING))
            for m in methods:
                if m == BASELINE:
                    continue
                rule = rule_of(m, mixing)
                keep = [r for r in ratios if (0 < r < 1 if rule in CONTROL_ARMS else r > 0)]
                out += [Job(n, m, float(r), s, rule) for r in keep]
    return out


def sizes(rule: str, ratio: float, n: int) -> tuple[int, int]:
    """(real, added) images per class for a rule at a ratio."""
    if rule == "replace":
        added = int(round(ratio * n))
        return n - added, added
    if ratio >= 1:
        return 0, n
    return n, int(round(ratio / (1 - ratio) * n))


def water_fill(have: np.ndarray, caps: np.ndarray, extra: int) -> np.ndarray:
    """How many to add to each cell so that the lowest cells are raised first: the integer
    additions (each at most its cap, summing to min(extra, sum of caps)) that make the final
    counts as even as the caps allow. Ties at the last level go to the first cells in order."""
    have = np.asarray(have, dtype=np.int64)
    caps = np.minimum(np.asarray(caps, dtype=np.int64), _UNLIMITED)
    extra = int(min(extra, caps.sum())) if len(have) else 0
    if extra <= 0:
        return np.zeros(len(have), dtype=np.int64)

    def added(level: int) -> np.ndarray:
        return np.clip(level - have, 0, caps)

    lo, hi = int(have.min()), int(have.max()) + extra  # added(hi).sum() >= extra
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if added(mid).sum() <= extra:
            lo = mid
        else:
            hi = mid - 1
    add = added(lo)
    rest = extra - int(add.sum())
    room = np.flatnonzero(added(lo + 1) > add)
    add[room[:rest]] += 1
    return add


def _take(rows: pd.DataFrame, k: int, seed: int, what: str) -> tuple[pd.DataFrame, int]:
    """The first k rows of a seeded permutation; with replacement beyond the rows there are.
    Returns the rows and how many are distinct."""
    order = np.random.default_rng(seed).permutation(len(rows))
    if k <= len(rows):
        return rows.iloc[order[:k]], k
    if len(rows) == 0:
        raise UserError(f"{what} has no image to draw from.")
    extra = np.random.default_rng(seed + 1).integers(0, len(rows), k - len(rows))
    return rows.iloc[np.concatenate([order, extra])], len(rows)


def cell_names(protected: list[str]) -> list[str]:
    """Names of the protected cells as the evaluation names its intersection groups."""
    return [":".join(c) for c in cells(protected)]


@dataclass(frozen=True)
class Pools:
    """What one job draws from: the train split's labelled rows and, for a generated arm, that
    set's pseudo-labelled rows, each with the root its paths are relative to."""
    real: pd.DataFrame
    real_root: str
    generated: pd.DataFrame | None = None
    generated_root: str | None = None


def _rows(take: pd.DataFrame, root: str, label: int, source: str,
          component: np.ndarray | int = -1, weight: np.ndarray | float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"file": [str(Path(root) / p) for p in take["path"]], "label": label,
                         "source": source, "component": component, "weight": weight})


def mix(job: Job, target: str, protected: list[str], pools: Pools, min_confidence: float
        ) -> tuple[pd.DataFrame, dict[str, float]]:
    """The job's training table (`file` absolute, `label` class index, `source`, `component`,
    `weight`) and what it holds: per class the real, added and distinct generated counts, the
    count of every protected cell (`cell/<class>/<cell>`, weighted for `reweight`) and, for
    `fill` and `oversample`, how far each cell stays below an even fill (`short/...`)."""
    classes = registry.get(target).classes
    names = cell_names(protected)
    real, rule = pools.real, job.mixing
    n_real, n_add = sizes(rule, job.ratio, job.n_per_class) if job.source != BASELINE \
        else (job.n_per_class, 0)
    parts: list[pd.DataFrame] = []
    counts: dict[str, float] = {}
    for c, cls in enumerate(classes):
        pool = real[real[target] == cls]
        if len(pool) < n_real:
            raise UserError(f"downstream.n_per_class = {job.n_per_class} needs {n_real} real "
                            f"'{cls}' images for {target}, but the train split has {len(pool)}.")
        take, _ = _take(pool, n_real, seed_of(job.seed, job.n_per_class, c, 1), "real")
        codes = cell_codes(take, protected)
        have = np.bincount(codes[codes >= 0], minlength=len(names))
        weight = np.ones(len(take))
        counts[f"real/{cls}"] = n_real
        added = np.zeros(len(names), dtype=np.int64)
        ideal = have + water_fill(have, np.full(len(names), _UNLIMITED), n_add)
        if rule in ("augment", "replace") and n_add:
            gpool = _confident(pools, [target], min_confidence)
            gpool = gpool[gpool[target] == cls]
            what = (f"the {job.source} set's '{cls}' images with confidence >= {min_confidence}")
            gtake, distinct = _take(gpool, n_add, seed_of(job.seed, job.n_per_class, c, 2), what)
            parts.append(_rows(gtake, cast(str, pools.generated_root), c, "generated",
                               gtake["component"].to_numpy()))
            gcodes = cell_codes(gtake, protected)
            added = np.bincount(gcodes[gcodes >= 0], minlength=len(names))
            counts[f"generated_distinct/{cls}"] = distinct
        elif rule == "fill" and n_add:
            gpool = _confident(pools, [target, *protected], min_confidence)
            gpool = gpool[gpool[target] == cls]
            gcodes = cell_codes(gpool, protected)
            per_cell = np.bincount(gcodes[gcodes >= 0], minlength=len(names))
            added = water_fill(have, per_cell, n_add)
            left = n_add - int(added.sum())
            if left:  # the pool is used up: repeat images of the cells that have any
                added += water_fill(have + added, np.where(per_cell > 0, _UNLIMITED, 0), left)
            if added.sum() < n_add:
                raise UserError(f"the {job.source} set has no '{cls}' image confident (>= "
                                f"{min_confidence}) on {target} and {', '.join(protected)}; "
                                f"fill cannot add any.")
            for p in np.flatnonzero(added):
                rows, _ = _take(gpool[gcodes == p], int(added[p]),
                                seed_of(job.seed, job.n_per_class, c, 3, int(p)), "cell")
                parts.append(_rows(rows, cast(str, pools.generated_root), c, "generated",
                                   rows["component"].to_numpy()))
            counts[f"generated_distinct/{cls}"] = int(np.minimum(added, per_cell).sum())
        elif rule == "oversample" and n_add:
            added = water_fill(have, np.where(have > 0, _UNLIMITED, 0), n_add)
            for p in np.flatnonzero(added):
                rows, _ = _take(take[codes == p], int(added[p]),
                                seed_of(job.seed, job.n_per_class, c, 4, int(p)), "cell")
                parts.append(_rows(rows, pools.real_root, c, "oversampled"))
        elif rule == "reweight":
            reached = have + water_fill(have, np.where(have > 0, _UNLIMITED, 0), n_add)
            factor = np.where(have > 0, reached / np.maximum(have, 1), 1.0)
            weight = np.where(codes >= 0, factor[np.clip(codes, 0, None)], 1.0)
            added = reached - have  # the weighted cell counts, for the record
        parts.insert(0, _rows(take, pools.real_root, c, "real", weight=weight))
        counts[f"added/{cls}"] = int(added.sum()) if rule != "reweight" else 0
        if n_add and rule in ("augment", "replace", "fill"):
            counts[f"generated/{cls}"] = n_add
        for i, name in enumerate(names):
            counts[f"cell/{cls}/{name}"] = float(have[i] + added[i])
            if rule in ("fill", "oversample", "reweight") and have[i] + added[i] < ideal[i]:
                counts[f"short/{cls}/{name}"] = float(ideal[i] - have[i] - added[i])
    table = pd.concat(parts, ignore_index=True)
    if rule == "reweight":
        table["weight"] = table["weight"] / table["weight"].mean()
    return table, counts


def _confident(pools: Pools, attributes: list[str], min_confidence: float) -> pd.DataFrame:
    assert pools.generated is not None and pools.generated_root is not None
    g = pools.generated
    keep = np.ones(len(g), dtype=bool)
    for a in attributes:
        keep &= (g[conf_column(a)] >= min_confidence).to_numpy()
    return g[keep]


# what a job's classifier depends on besides its own (size, arm, ratio, seed) and its data
_TRAINING_KEYS = ("downstream.target", "downstream.protected", "downstream.backbone",
                  "downstream.epochs", "downstream.batch_size", "downstream.learning_rate",
                  "downstream.eval")


def job_key(cfg: Config, job: Job, hash_of: Callable[[Input], str]) -> str:
    """The hash of exactly what one job's classifier and its scores depend on: the real data,
    the generated set it draws from (that method's images and their pseudo-labels), its size,
    rule, ratio and seed, the training settings and the evaluation set. Other jobs, seeds,
    ratios or arms of the grid are not in it, so adding a seed trains only the new seed's jobs.
    `hash_of` gives the config hash of each input it reads."""
    parts = [hash_of("data"), cfg.section_hash(*_TRAINING_KEYS), str(cfg.classifier_image_size),
             job.folder, job.mixing]
    if job.generated_set is not None:
        parts += [method_key(cfg, job.generated_set, hash_of), hash_of("labeller"),
                  cfg.section_hash("label.min_confidence")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
