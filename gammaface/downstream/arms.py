"""The downstream arms' rules, one object each, in one registry: how a job adds to each target
class's real images.

An arm is `baseline`, a generated set mixed by a rule (`augment`, `replace`, `fill`: the set's
name, with `:rule` or `downstream.mixing`), or a control, a rule that needs no generator and is
an arm under its own name (`oversample`, `reweight`). `gammaface.downstream.mixing` describes
each rule's protocol; the config's arm vocabulary (`downstream.methods`, `downstream.mixing`),
the job grid and the training tables read this registry, so a rule registered from outside the
package (a test does) is an arm everywhere with no other edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from gammaface.classifiers.labels import conf_column
from gammaface.data.cells import cell_codes
from gammaface.common.errors import UserError
from gammaface.common.seeds import seed_of

ARM_SEP = ":"  # between a generated set's name and its rule
UNLIMITED = np.iinfo(np.int64).max // 4


def split_arm(name: str) -> tuple[str, str | None]:
    """A downstream arm's generated set (or baseline, or control) and its explicit mixing rule."""
    source, _, rule = name.partition(ARM_SEP)
    return source, (rule or None)


@dataclass(frozen=True)
class Pools:
    """What one job draws from: the train split's labelled rows and, for a generated arm, that
    set's pseudo-labelled rows, each with the root its paths are relative to."""
    real: pd.DataFrame
    real_root: str
    generated: pd.DataFrame | None = None
    generated_root: str | None = None


def water_fill(have: np.ndarray, caps: np.ndarray, extra: int) -> np.ndarray:
    """How many to add to each cell so that the lowest cells are raised first: the integer
    additions (each at most its cap, summing to min(extra, sum of caps)) that make the final
    counts as even as the caps allow. Ties at the last level go to the first cells in order."""
    have = np.asarray(have, dtype=np.int64)
    caps = np.minimum(np.asarray(caps, dtype=np.int64), UNLIMITED)
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


def take(rows: pd.DataFrame, k: int, seed: int, what: str) -> tuple[pd.DataFrame, int]:
    """The first k rows of a seeded permutation; with replacement beyond the rows there are.
    Returns the rows and how many are distinct."""
    order = np.random.default_rng(seed).permutation(len(rows))
    if k <= len(rows):
        return rows.iloc[order[:k]], k
    if len(rows) == 0:
        raise UserError(f"{what} has no image to draw from.")
    extra = np.random.default_rng(seed + 1).integers(0, len(rows), k - len(rows))
    return rows.iloc[np.concatenate([order, extra])], len(rows)


def table_rows(rows: pd.DataFrame, root: str, label: int, source: str,
               component: np.ndarray | int = -1, weight: np.ndarray | float = 1.0) -> pd.DataFrame:
    """Rows of a job's training table: `file` absolute, `label` class index, `source`,
    `component`, `weight`."""
    return pd.DataFrame({"file": [str(Path(root) / p) for p in rows["path"]], "label": label,
                         "source": source, "component": component, "weight": weight})


def confident(pools: Pools, attributes: list[str], min_confidence: float) -> pd.DataFrame:
    """The generated rows whose pseudo-labels on every one of `attributes` are confident."""
    assert pools.generated is not None and pools.generated_root is not None
    g = pools.generated
    keep = np.ones(len(g), dtype=bool)
    for a in attributes:
        keep &= (g[conf_column(a)] >= min_confidence).to_numpy()
    return g[keep]


@dataclass(frozen=True)
class ClassDraw:
    """What a rule may read for one target class of one job: the job's seed, size and source
    (the generated set, or the control), the class (index `c`, name `cls`), the real rows taken
    for it and their protected cell codes and counts (`have`, over `cells`), how many images
    to add, and the pools."""

    seed: int
    n_per_class: int
    source: str
    c: int
    cls: str
    target: str
    protected: list[str]
    cells: list[str]
    real: pd.DataFrame
    codes: np.ndarray
    have: np.ndarray
    n_add: int
    pools: Pools
    min_confidence: float

    def seed_of(self, *parts: int) -> int:
        """A seed of this job and class: the same one every arm of the (size, seed) derives."""
        return seed_of(self.seed, self.n_per_class, self.c, *parts)


@dataclass
class Added:
    """What a rule adds to a class: rows of the training table, the count added to each
    protected cell, the real rows' loss weights (None: 1 each) and counts to record."""

    parts: list[pd.DataFrame]
    added: np.ndarray
    weight: np.ndarray | None = None
    counts: dict[str, float] = field(default_factory=dict)


class Rule:
    """How an arm adds images to each class. Subclasses override `add` (and `sizes` where the
    set's size is not the augmenting one)."""

    control: ClassVar[bool] = False  # needs no generated set: an arm under its own name
    generated: ClassVar[bool] = False  # adds images of a generated set
    reports_short: ClassVar[bool] = False  # records how far each cell stays below an even fill
    weighs: ClassVar[bool] = False  # adds loss weight, not images (the record counts 0 added)

    def __init__(self, name: str) -> None:
        self.name = name

    def sizes(self, ratio: float, n: int) -> tuple[int, int]:
        """(real, added) images per class at a ratio: all n real kept and as many added as make
        `ratio` of the set (ratio 1: n added and no real one)."""
        if ratio >= 1:
            return 0, n
        return n, int(round(ratio / (1 - ratio) * n))

    def keeps(self, ratio: float) -> bool:
        """Whether the arm has a job at this ratio: a control only where real images stay and
        something is added, a generated set wherever it adds."""
        return 0 < ratio < 1 if self.control else ratio > 0

    def add(self, d: ClassDraw) -> Added:
        raise NotImplementedError

    def finish(self, table: pd.DataFrame) -> pd.DataFrame:
        """The whole training table once every class is drawn."""
        return table

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def nothing(d: ClassDraw) -> Added:
    return Added([], np.zeros(len(d.cells), dtype=np.int64))


class Augment(Rule):
    """Generated images confident on the target, drawn at random (the paper's protocol)."""

    generated: ClassVar[bool] = True

    def add(self, d: ClassDraw) -> Added:
        if not d.n_add:
            return nothing(d)
        gpool = confident(d.pools, [d.target], d.min_confidence)
        gpool = gpool[gpool[d.target] == d.cls]
        what = f"the {d.source} set's '{d.cls}' images with confidence >= {d.min_confidence}"
        gtake, distinct = take(gpool, d.n_add, d.seed_of(2), what)
        gcodes = cell_codes(gtake, d.protected)
        return Added([table_rows(gtake, str(d.pools.generated_root), d.c, "generated",
                                 gtake["component"].to_numpy())],
                     np.bincount(gcodes[gcodes >= 0], minlength=len(d.cells)),
                     counts={f"generated_distinct/{d.cls}": distinct})


class Replace(Augment):
    """As augment, with the set's size held at n: round(r n) generated images take the place of
    real ones."""

    def sizes(self, ratio: float, n: int) -> tuple[int, int]:
        added = int(round(ratio * n))
        return n - added, added


class Fill(Rule):
    """Generated images chosen by their pseudo-labels so that the class's protected cells come
    as close to equal counts as the pool allows."""

    generated: ClassVar[bool] = True
    reports_short: ClassVar[bool] = True

    def add(self, d: ClassDraw) -> Added:
        if not d.n_add:
            return nothing(d)
        gpool = confident(d.pools, [d.target, *d.protected], d.min_confidence)
        gpool = gpool[gpool[d.target] == d.cls]
        gcodes = cell_codes(gpool, d.protected)
        per_cell = np.bincount(gcodes[gcodes >= 0], minlength=len(d.cells))
        added = water_fill(d.have, per_cell, d.n_add)
        left = d.n_add - int(added.sum())
        if left:  # the pool is used up: repeat images of the cells that have any
            added += water_fill(d.have + added, np.where(per_cell > 0, UNLIMITED, 0), left)
        if added.sum() < d.n_add:
            raise UserError(f"the {d.source} set has no '{d.cls}' image confident (>= "
                            f"{d.min_confidence}) on {d.target} and {', '.join(d.protected)}; "
                            f"{self.name} cannot add any.")
        parts = []
        for p in np.flatnonzero(added):
            rows, _ = take(gpool[gcodes == p], int(added[p]), d.seed_of(3, int(p)), "cell")
            parts.append(table_rows(rows, str(d.pools.generated_root), d.c, "generated",
                                    rows["component"].to_numpy()))
        return Added(parts, added,
                     counts={f"generated_distinct/{d.cls}": int(np.minimum(added, per_cell).sum())})


class Oversample(Rule):
    """Repeats of the job's own real images of each cell, to the counts an unlimited fill
    would reach (a cell with no real image stays short)."""

    control: ClassVar[bool] = True
    reports_short: ClassVar[bool] = True

    def add(self, d: ClassDraw) -> Added:
        if not d.n_add:
            return nothing(d)
        added = water_fill(d.have, np.where(d.have > 0, UNLIMITED, 0), d.n_add)
        parts = []
        for p in np.flatnonzero(added):
            rows, _ = take(d.real[d.codes == p], int(added[p]), d.seed_of(4, int(p)), "cell")
            parts.append(table_rows(rows, d.pools.real_root, d.c, "oversampled"))
        return Added(parts, added)


class Reweight(Rule):
    """Every real image once, with a loss weight that gives each cell the share it has under
    oversample (weights have mean 1 over the set)."""

    control: ClassVar[bool] = True
    reports_short: ClassVar[bool] = True
    weighs: ClassVar[bool] = True

    def add(self, d: ClassDraw) -> Added:
        reached = d.have + water_fill(d.have, np.where(d.have > 0, UNLIMITED, 0), d.n_add)
        factor = np.where(d.have > 0, reached / np.maximum(d.have, 1), 1.0)
        weight = np.where(d.codes >= 0, factor[np.clip(d.codes, 0, None)], 1.0)
        return Added([], reached - d.have, weight)  # the weighted cell counts, for the record

    def finish(self, table: pd.DataFrame) -> pd.DataFrame:
        table["weight"] = table["weight"] / table["weight"].mean()
        return table


class _NoMixing(Rule):
    """The baseline's rule: the real images alone."""

    def add(self, d: ClassDraw) -> Added:
        return nothing(d)


NO_MIXING = _NoMixing("none")
_REGISTRY: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add a rule: a control becomes an arm of its own name, another a rule a generated set
    can be mixed by."""
    if rule.name in _REGISTRY or rule.name in ("baseline", NO_MIXING.name):
        raise ValueError(f"a downstream rule named {rule.name!r} exists already")
    if ARM_SEP in rule.name or not rule.name:
        raise ValueError(f"{rule.name!r} cannot name a downstream rule (empty, or with {ARM_SEP!r})")
    _REGISTRY[rule.name] = rule
    return rule


def unregister(name: str) -> None:
    """Take a rule out again (a test's own); a built-in rule cannot be taken out."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in downstream rule")
    _REGISTRY.pop(name, None)


def rule(name: str) -> Rule:
    if name == NO_MIXING.name:
        return NO_MIXING
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown downstream rule {name!r}; known: {', '.join(_REGISTRY)}") from None


def mixing_rules() -> tuple[str, ...]:
    """The rules a generated set can be mixed by."""
    return tuple(n for n, r in _REGISTRY.items() if not r.control)


def controls() -> tuple[str, ...]:
    """The arms that need no generator."""
    return tuple(n for n, r in _REGISTRY.items() if r.control)


def is_control(name: str) -> bool:
    return name in _REGISTRY and _REGISTRY[name].control


for _rule in (Augment("augment"), Replace("replace"), Fill("fill"), Oversample("oversample"),
              Reweight("reweight")):
    register(_rule)
BUILT_IN = frozenset(_REGISTRY)
