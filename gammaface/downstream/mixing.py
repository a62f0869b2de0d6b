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
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from gammaface.data import registry
from gammaface.data.cells import cell_codes, cells
from gammaface.downstream import arms
from gammaface.downstream.arms import ARM_SEP, ClassDraw, Pools, split_arm, take, table_rows, water_fill
from gammaface.common.errors import UserError
from gammaface.generate.methods import Input, method_key
from gammaface.common.seeds import seed_of

if TYPE_CHECKING:
    from gammaface.config import Config

BASELINE = "baseline"
SOURCES = ("real", "generated", "oversampled")
NO_MIXING = arms.NO_MIXING.name  # the baseline's rule


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
        return None if self.source == BASELINE or arms.is_control(self.source) else self.source

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
    if arms.is_control(source):
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
                keep = [r for r in ratios if arms.rule(rule).keeps(r)]
                out += [Job(n, m, float(r), s, rule) for r in keep]
    return out


def cell_names(protected: list[str]) -> list[str]:
    """Names of the protected cells as the evaluation names its intersection groups."""
    return [":".join(c) for c in cells(protected)]


def mix(job: Job, target: str, protected: list[str], pools: Pools, min_confidence: float
        ) -> tuple[pd.DataFrame, dict[str, float]]:
    """The job's training table (`file` absolute, `label` class index, `source`, `component`,
    `weight`) and what it holds: per class the real, added and distinct generated counts, the
    count of every protected cell (`cell/<class>/<cell>`, weighted for `reweight`) and, for
    the rules that fill cells (`fill`, `oversample`, `reweight`), how far each cell stays below
    an even fill (`short/...`). The arm's rule (`arms`) says what each class gets added."""
    classes = registry.get(target).classes
    names = cell_names(protected)
    real, rule = pools.real, arms.rule(job.mixing)
    n_real, n_add = rule.sizes(job.ratio, job.n_per_class) if job.source != BASELINE \
        else (job.n_per_class, 0)
    parts: list[pd.DataFrame] = []
    counts: dict[str, float] = {}
    for c, cls in enumerate(classes):
        pool = real[real[target] == cls]
        if len(pool) < n_real:
            raise UserError(f"downstream.n_per_class = {job.n_per_class} needs {n_real} real "
                            f"'{cls}' images for {target}, but the train split has {len(pool)}.")
        drawn, _ = take(pool, n_real, seed_of(job.seed, job.n_per_class, c, 1), "real")
        codes = cell_codes(drawn, protected)
        have = np.bincount(codes[codes >= 0], minlength=len(names))
        counts[f"real/{cls}"] = n_real
        ideal = have + water_fill(have, np.full(len(names), arms.UNLIMITED), n_add)
        got = rule.add(ClassDraw(job.seed, job.n_per_class, job.source, c, cls, target, protected,
                                 names, drawn, codes, have, n_add, pools, min_confidence))
        parts += got.parts
        counts.update(got.counts)
        weight = np.ones(len(drawn)) if got.weight is None else got.weight
        parts.insert(0, table_rows(drawn, pools.real_root, c, "real", weight=weight))
        counts[f"added/{cls}"] = 0 if rule.weighs else int(got.added.sum())
        if n_add and rule.generated:
            counts[f"generated/{cls}"] = n_add
        for i, name in enumerate(names):
            counts[f"cell/{cls}/{name}"] = float(have[i] + got.added[i])
            if rule.reports_short and have[i] + got.added[i] < ideal[i]:
                counts[f"short/{cls}/{name}"] = float(ideal[i] - have[i] - got.added[i])
    return rule.finish(pd.concat(parts, ignore_index=True)), counts


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
