"""The training set of one downstream job: real and generated images at a mixing ratio.

What is held fixed when the ratio changes: the size of the training set and its class counts.
Every target class gets `n_per_class` images, of which round(ratio * n_per_class) are generated
(pseudo-labelled with that class, confidence at least `label.min_confidence`) and the rest are
real (from the train split, with the dataset's own skew in every other attribute). For one seed
and size, the real images at a higher ratio are a subset of those at a lower one, and the
generated images at a lower ratio a subset of those at a higher one, so a change between ratios
comes from swapping real for generated images and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from gammaface.classifiers.labels import conf_column
from gammaface.config import Config
from gammaface.data import registry
from gammaface.errors import UserError
from gammaface.generate.plan import method_key
from gammaface.seeds import seed_of

BASELINE = "baseline"
SOURCES = ("real", "generated")


@dataclass(frozen=True)
class Job:
    n_per_class: int
    method: str
    ratio: float
    seed: int

    @property
    def folder(self) -> str:
        return f"n{self.n_per_class}/{self.method}/{self.ratio:g}/seed{self.seed}"

    @property
    def name(self) -> str:
        return f"{self.method} r={self.ratio:g} seed={self.seed} n={self.n_per_class}"


def jobs(n_per_class: list[int], methods: list[str], ratios: list[float], seeds: int) -> list[Job]:
    """Every (size, method, ratio, seed). Ratio 0 holds no generated image, so it is the
    baseline's alone; the baseline is trained only at ratio 0."""
    out = []
    for n in n_per_class:
        for s in range(seeds):
            if BASELINE in methods:
                out.append(Job(n, BASELINE, 0.0, s))
            for m in methods:
                if m == BASELINE:
                    continue
                out += [Job(n, m, float(r), s) for r in ratios if r > 0]
    return out


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


def mix(job: Job, target: str, real: pd.DataFrame, real_root: str,
        generated: pd.DataFrame | None, generated_root: str | None, min_confidence: float
        ) -> tuple[pd.DataFrame, dict[str, int]]:
    """The job's training table (`file` absolute, `label` class index, `source`, `component`)
    and the counts actually used per source and class."""
    classes = registry.get(target).classes
    parts, counts = [], {}
    for c, cls in enumerate(classes):
        n_gen = int(round(job.ratio * job.n_per_class))
        n_real = job.n_per_class - n_gen
        pool = real[real[target] == cls]
        if len(pool) < n_real:
            raise UserError(f"downstream.n_per_class = {job.n_per_class} needs {n_real} real "
                            f"'{cls}' images for {target}, but the train split has {len(pool)}.")
        take, _ = _take(pool, n_real, seed_of(job.seed, job.n_per_class, c, 1), "real")
        parts.append(pd.DataFrame({"file": [str(Path(real_root) / p) for p in take["path"]],
                                   "label": c, "source": "real", "component": -1}))
        counts[f"real/{cls}"] = n_real
        if n_gen:
            assert generated is not None and generated_root is not None
            conf = generated[conf_column(target)]
            gpool = generated[(generated[target] == cls) & (conf >= min_confidence)]
            what = (f"the {job.method} set's '{cls}' images with confidence >= {min_confidence}")
            gtake, distinct = _take(gpool, n_gen, seed_of(job.seed, job.n_per_class, c, 2), what)
            parts.append(pd.DataFrame({"file": [str(Path(generated_root) / p) for p in gtake["path"]],
                                       "label": c, "source": "generated",
                                       "component": gtake["component"].to_numpy()}))
            counts[f"generated/{cls}"] = n_gen
            counts[f"generated_distinct/{cls}"] = distinct
    return pd.concat(parts, ignore_index=True), counts


# what a job's classifier depends on besides its own (size, method, ratio, seed) and its data
_TRAINING_KEYS = ("downstream.target", "downstream.backbone", "downstream.epochs",
                  "downstream.batch_size", "downstream.learning_rate")


def job_key(cfg: Config, job: Job, hash_of: Callable[[str], str]) -> str:
    """The hash of exactly what one job's classifier depends on: the real data, the generated
    set it draws from (that method's images and their pseudo-labels), its size, ratio and seed,
    and the training settings. Other jobs, seeds, ratios or methods of the grid are not in it,
    so adding a seed trains only the new seed's jobs. `hash_of` gives the config hash of
    the stages it reads."""
    parts = [hash_of("prepare"), cfg.section_hash(*_TRAINING_KEYS), str(cfg.classifier_image_size),
             job.folder]
    if job.method != BASELINE:
        parts += [method_key(cfg, job.method, hash_of), hash_of("train_classifiers"),
                  cfg.section_hash("label.min_confidence")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
