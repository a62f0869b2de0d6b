"""The joint distribution of SynthFaces labels: marginals plus conditional tables.

A spec maps each attribute to either a marginal `{class: p}` or a conditional table
`{given: [parents], table: {"p1,p2": {class: p}}}` whose keys list the parents' classes in the
order of `given`. Attributes are drawn ancestrally, parents first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gammaface.data import registry
from gammaface.common.errors import UserError
from gammaface.common.yamlio import YAMLError
from gammaface.common.yamlio import load as load_yaml
from gammaface.common.yamlio import why as yaml_why

# Biased the way real face sets are: old faces rare, one race group rare, smiling tied to young
# and female, glasses tied to old and male, hair colour tied to race.
DEFAULT_SPEC: dict[str, Any] = {
    "age": {"young": 0.8, "old": 0.2},
    "gender": {"female": 0.5, "male": 0.5},
    "race": {"white": 0.6, "black": 0.15, "other": 0.25},
    "smile": {"given": ["age", "gender"], "table": {
        "young,female": {"no": 0.25, "yes": 0.75},
        "young,male": {"no": 0.5, "yes": 0.5},
        "old,female": {"no": 0.6, "yes": 0.4},
        "old,male": {"no": 0.8, "yes": 0.2},
    }},
    "glasses": {"given": ["age", "gender"], "table": {
        "young,female": {"no": 0.92, "yes": 0.08},
        "young,male": {"no": 0.85, "yes": 0.15},
        "old,female": {"no": 0.6, "yes": 0.4},
        "old,male": {"no": 0.4, "yes": 0.6},
    }},
    "hair": {"given": ["race"], "table": {
        "white": {"black": 0.2, "brown": 0.6, "other": 0.2},
        "black": {"black": 0.9, "brown": 0.08, "other": 0.02},
        "other": {"black": 0.6, "brown": 0.3, "other": 0.1},
    }},
}

UNIFORM_SPEC: dict[str, Any] = {
    name: {c: 1.0 / attr.n_classes for c in attr.classes}
    for name, attr in registry.ATTRIBUTES.items()
}

_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Factor:
    """P(attribute | parents) as an array indexed [parent classes..., attribute class]."""

    attribute: str
    parents: tuple[str, ...]
    table: np.ndarray


class Spec:
    """A validated joint distribution over all registry attributes."""

    def __init__(self, raw: dict[str, Any], source: str = "spec") -> None:
        if not isinstance(raw, dict):
            raise UserError(f"{source}: a SynthFaces spec must be a mapping of attributes.")
        missing = [a for a in registry.ATTRIBUTE_NAMES if a not in raw]
        unknown = [a for a in raw if a not in registry.ATTRIBUTE_NAMES]
        if unknown:
            raise UserError(f"{source}: unknown attribute {unknown[0]!r}; "
                            f"expected {', '.join(registry.ATTRIBUTE_NAMES)}.")
        if missing:
            raise UserError(f"{source}: attribute {missing[0]!r} has no distribution.")
        self.source = source
        self.factors = {name: _parse_factor(name, raw[name], source) for name in raw}
        self.order = _topological_order(self.factors, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Spec:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"SynthFaces spec {path} does not exist.")
        try:
            raw = load_yaml(path.read_text())
        except YAMLError as exc:
            raise UserError(f"SynthFaces spec {path} is not valid YAML{yaml_why(exc)}.") from None
        return cls(raw, source=str(path))

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Class indices per attribute, drawn ancestrally."""
        out: dict[str, np.ndarray] = {}
        for name in self.order:
            f = self.factors[name]
            probs = f.table[tuple(out[p] for p in f.parents)] if f.parents else \
                np.broadcast_to(f.table, (n, f.table.shape[-1]))
            cdf = np.cumsum(probs, axis=-1)
            u = rng.random(n)[:, None]
            out[name] = np.minimum((u > cdf).sum(axis=-1), f.table.shape[-1] - 1)
        return out

    def joint(self) -> np.ndarray:
        """The exact joint probability, indexed by class index in registry attribute order."""
        shape = tuple(registry.get(a).n_classes for a in registry.ATTRIBUTE_NAMES)
        joint = np.ones(shape)
        axes = {a: i for i, a in enumerate(registry.ATTRIBUTE_NAMES)}
        for name, f in self.factors.items():
            src_axes = [axes[p] for p in f.parents] + [axes[name]]
            view_shape = [1] * len(shape)
            for ax, size in zip(src_axes, f.table.shape):
                view_shape[ax] = size
            # the table's axes must be in ascending registry order before the reshape
            order = np.argsort(src_axes)
            joint = joint * np.transpose(f.table, order).reshape(view_shape)
        return joint


def _parse_factor(name: str, raw: Any, source: str) -> Factor:
    attr = registry.get(name)
    if isinstance(raw, dict) and "given" in raw:
        extra = set(raw) - {"given", "table"}
        if extra:
            raise UserError(f"{source}: {name} has unknown key {sorted(extra)[0]!r}.")
        parents = tuple(raw["given"] or ())
        for p in parents:
            if p not in registry.ATTRIBUTE_NAMES or p == name:
                raise UserError(f"{source}: {name}.given names {p!r}, which is not another attribute.")
        table_raw = raw.get("table")
        if not isinstance(table_raw, dict):
            raise UserError(f"{source}: {name}.table must map parent classes to distributions.")
        parent_classes = [registry.get(p).classes for p in parents]
        table = np.zeros([len(c) for c in parent_classes] + [attr.n_classes])
        expected = {",".join(combo): combo for combo in itertools.product(*parent_classes)}
        for key in table_raw:
            if key not in expected:
                raise UserError(f"{source}: {name}.table has key {key!r}; keys are the classes of "
                                f"{', '.join(parents)} joined by commas, e.g. {next(iter(expected))!r}.")
        for key, combo in expected.items():
            if key not in table_raw:
                raise UserError(f"{source}: {name}.table has no row for {key!r}.")
            idx = tuple(registry.get(p).index(c) for p, c in zip(parents, combo))
            table[idx] = _parse_distribution(attr, table_raw[key], f"{name}.table[{key}]", source)
        return Factor(name, parents, table)
    return Factor(name, (), _parse_distribution(attr, raw, name, source))


def _parse_distribution(attr: registry.Attribute, raw: Any, where: str, source: str) -> np.ndarray:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where} must map the classes of {attr.name} to probabilities.")
    probs = np.zeros(attr.n_classes)
    for cls, p in raw.items():
        if cls not in attr.classes:
            raise UserError(f"{source}: {where} has class {cls!r}; {attr.name} classes are "
                            f"{', '.join(attr.classes)}.")
        # written as "not within" so that NaN, which fails every comparison, is refused too
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise UserError(f"{source}: {where}.{cls} = {p!r} is not a probability.")
        probs[attr.index(cls)] = float(p)
    if not abs(probs.sum() - 1.0) <= _SUM_TOLERANCE:
        raise UserError(f"{source}: {where} sums to {probs.sum():g}, not 1.")
    return probs


def _topological_order(factors: dict[str, Factor], source: str) -> list[str]:
    order: list[str] = []
    pending = [a for a in registry.ATTRIBUTE_NAMES if a in factors]
    while pending:
        ready = [a for a in pending if all(p in order for p in factors[a].parents)]
        if not ready:
            raise UserError(f"{source}: the 'given' lists form a cycle among {', '.join(pending)}.")
        order.extend(ready)
        pending = [a for a in pending if a not in ready]
    return order
