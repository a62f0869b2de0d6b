"""The generation methods, one object each, in one registry.

A method says which family it belongs to, which settings and inputs its images depend on (its
resume key) and, for the methods that draw a fixed number of images, where its renders start
and how many each component gets. Everything that names methods reads this registry: the
config's vocabulary (`generate.methods`, and the downstream arms that name a generated set),
the generate stage, the resume keys. A method added with `register` (from a plug-in module or a
test) is known to all of them; nothing else needs editing.

The families, each isolating one cause of a change in balance:
- `mixture`: the harvested latents' mixture, drawn with per-component counts from `weights`
  (`gmm`: equal, the paper; `gmm_weighted`: the mixture's own weights; `gmm_tempered`:
  pi^alpha; `gmm_attr`: the counts that bring the protected intersection closest to uniform);
- `quota`: renders kept by the labeller while their cell has room, from a `proposal`;
- `plain`: one draw of `generate.n` images that `draw` describes (a single Gaussian, pure DDPM
  samples, training images of each protected cell noised to t*).

The registration order is part of every shard's seed (`index`): a new method goes at the end,
so the images of every earlier method stay the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Literal

import numpy as np

from gammaface.generate.plan import NO_COMPONENT, counts_from_weights, tempered
from gammaface.generate.specs import DrawSpec, ImagesDraw, NoiseDraw

if TYPE_CHECKING:
    import pandas as pd

    from gammaface.config import Config
    from gammaface.generate.weights import Balancing
    from gammaface.gmm.mixture import GaussianMixture

Family = Literal["mixture", "quota", "plain"]
# What a key reads besides settings, by what it is rather than by the stage that makes it:
# the prepared dataset, the DDPM, the labeller, the mixture. The caller hashes each.
Input = Literal["data", "ddpm", "labeller", "mixture"]
@dataclass(frozen=True)
class DrawInputs:
    """What a plain method's draw may read: the config, the chosen mixture and the latents in
    its space, the DDPM's train split, a function that turns per-component means, variances and
    per-latent responsibilities into a draw in that space (`generate.draw`), and where to say
    what it left out."""

    cfg: Config
    mixture: GaussianMixture
    space_X: np.ndarray
    train: pd.DataFrame
    mixture_spec: Callable[[np.ndarray, np.ndarray, np.ndarray], DrawSpec]
    echo: Callable[[str], None]


@dataclass(frozen=True)
class Draw:
    """A plain method's shards: where its renders start, and how many images each component
    (NO_COMPONENT: none) gets."""

    spec: DrawSpec
    counts: np.ndarray
    components: list[int]


class Method:
    """One generation method. Subclasses set `family` and override what their family uses."""

    family: ClassVar[Family]
    default: ClassVar[bool] = True  # a built-in that a config naming no methods makes

    def __init__(self, name: str) -> None:
        self.name = name

    def settings(self, cfg: Config) -> list[str]:
        """The config keys (besides the size, steps, eta, shard size and seed every method
        reads) that change this method's images."""
        return []

    def inputs(self, cfg: Config) -> list[Input]:
        """The upstream results this method's images read."""
        raise NotImplementedError

    def weights(self, cfg: Config, pi: np.ndarray, balancing: Balancing) -> np.ndarray:
        """A mixture method's share of images per component."""
        raise NotImplementedError(f"{self.name} is not a mixture method")

    def draw(self, given: DrawInputs) -> Draw:
        """A plain method's shards."""
        raise NotImplementedError(f"{self.name} is not a plain method")

    @property
    def proposal(self) -> str:
        """A quota set's proposal: where its renders start."""
        raise NotImplementedError(f"{self.name} is not a quota set")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _draw_settings(cfg: Config) -> list[str]:
    """What a draw from the mixture's space reads: how it draws, and the Gaussian's temperature."""
    return ["generate.draw"] + (["generate.temperature"] if cfg.generate.draw == "gaussian" else [])


class MixtureMethod(Method):
    family: ClassVar[Family] = "mixture"

    def __init__(self, name: str, weights: Callable[[Config, np.ndarray, Balancing], np.ndarray],
                 settings: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self._weights, self._settings = weights, settings

    def settings(self, cfg: Config) -> list[str]:
        return _draw_settings(cfg) + list(self._settings)

    def inputs(self, cfg: Config) -> list[Input]:
        return ["mixture"]

    def weights(self, cfg: Config, pi: np.ndarray, balancing: Balancing) -> np.ndarray:
        return self._weights(cfg, pi, balancing)


class BalancedMixture(MixtureMethod):
    """`gmm_attr`: counts per component from the components' protected compositions, which come
    from the labeller on pilot renders when the latents carry no labels."""

    def __init__(self, name: str) -> None:
        super().__init__(name, lambda cfg, pi, balancing: balancing.weights, ("generate.protected",))

    def settings(self, cfg: Config) -> list[str]:
        return super().settings(cfg) + (["generate.pilot"] if uses_labeller(cfg) else [])

    def inputs(self, cfg: Config) -> list[Input]:
        return ["mixture", "labeller"] if uses_labeller(cfg) else ["mixture"]


class QuotaSet(Method):
    family: ClassVar[Family] = "quota"
    default: ClassVar[bool] = False  # a quota set is asked for by name

    def __init__(self, name: str, proposal: str) -> None:
        super().__init__(name)
        self._proposal = proposal

    @property
    def proposal(self) -> str:
        return self._proposal

    def settings(self, cfg: Config) -> list[str]:
        q = cfg.generate.quota
        # not the budget nor the round limit: they only cut the rounds short, and every shard
        # is checked against its plan record, so a larger budget renders only the new rounds
        keys = ["generate.quota.cells", "generate.quota.shares", "generate.quota.min_confidence"]
        if q.exit_checks:  # which renders stop early (none: a set made without checks)
            keys += ["generate.quota.exit_checks", "generate.quota.exit_below"]
        if q.min_confidence is None:
            keys.append("label.min_confidence")
        if quota_attributes(cfg) == list(cfg.generate.protected):
            keys.append("generate.protected")  # the components' compositions are the prior
        if self.proposal != "unconditional":
            keys.append("generate.quota.draw" if q.draw else "generate.draw")
            if quota_draw(cfg) == "gaussian":
                keys.append("generate.temperature")
            elif q.t_start is not None:
                keys.append("generate.quota.t_start")
        return keys

    def inputs(self, cfg: Config) -> list[Input]:
        return ["labeller", "ddpm" if self.proposal == "unconditional" else "mixture"]


class SingleGaussian(Method):
    """One Gaussian at the same t* and in the same space: K = 1 in closed form (the latents'
    mean and variance, what EM converges to at once)."""

    family: ClassVar[Family] = "plain"

    def settings(self, cfg: Config) -> list[str]:
        return _draw_settings(cfg)

    def inputs(self, cfg: Config) -> list[Input]:
        return ["mixture"]

    def draw(self, given: DrawInputs) -> Draw:
        from gammaface.gmm.mixture import fit_single

        spec = given.mixture_spec(*fit_single(given.space_X, given.cfg.gmm.reg_covar))
        return Draw(spec, np.array([given.cfg.generate.n]), [0])


class Unconditional(Method):
    """Pure DDPM samples from T: no latents, no mixture."""

    family: ClassVar[Family] = "plain"

    def inputs(self, cfg: Config) -> list[Input]:
        return ["ddpm"]

    def draw(self, given: DrawInputs) -> Draw:
        return Draw(NoiseDraw(), np.array([given.cfg.generate.n]), [NO_COMPONENT])


class Stratified(Method):
    """Training images of each protected cell in equal numbers, noised to the harvest's t* and
    finished: the label-using reference for how much balance is attainable."""

    family: ClassVar[Family] = "plain"

    def settings(self, cfg: Config) -> list[str]:
        return ["harvest.t_star", "generate.protected"]

    def inputs(self, cfg: Config) -> list[Input]:
        return ["ddpm"]

    def draw(self, given: DrawInputs) -> Draw:
        from gammaface.data.cells import cell_members, cells
        from gammaface.common.errors import UserError

        protected = list(given.cfg.generate.protected)
        cell_paths = cell_members(given.train, protected)
        if not cell_paths:
            raise UserError(f"no train image has every protected attribute "
                            f"({', '.join(protected)}) labelled; {self.name} has nothing to draw.")
        missing = len(cells(protected)) - len(cell_paths)
        if missing:
            given.echo(f"  {self.name}: {missing} protected cell(s) have no train image and are left out")
        comps = [int(c) for c in cell_paths]
        return Draw(ImagesDraw(cell_paths),
                    counts_from_weights(np.ones(len(comps)), given.cfg.generate.n), comps)


_REGISTRY: dict[str, Method] = {}


def quota_draw(cfg: Config) -> str:
    """How a quota set's mixture proposal draws its starting points."""
    return cfg.generate.quota.draw or cfg.generate.draw


def quota_attributes(cfg: Config) -> list[str]:
    """The attributes whose cells a quota set fills."""
    return list(cfg.generate.quota.cells or cfg.generate.protected)


def uses_labeller(cfg: Config) -> bool:
    """Reverse latents have no source labels, so the component compositions (for `gmm_attr`'s
    weights and every mixture method's predicted balance) come from the labeller."""
    return (cfg.harvest.source == "reverse"
            and any(in_family(m, "mixture") for m in cfg.generate.methods))


def register(method: Method) -> Method:
    """Add a method at the end of the registry (its shard seeds follow from its place)."""
    if method.name in _REGISTRY:
        raise ValueError(f"a generation method named {method.name!r} is registered already")
    if ":" in method.name or not method.name:
        raise ValueError(f"{method.name!r} cannot name a generation method (empty, or with ':', "
                         "which separates a downstream arm's mixing rule)")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Take a method out again (a test's own); a built-in method cannot be taken out."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in generation method")
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown generation method {name!r}; known: {', '.join(_REGISTRY)}") from None


def names(family: Family | None = None) -> tuple[str, ...]:
    """Every registered method's name (of one family), in registration order."""
    return tuple(n for n, m in _REGISTRY.items() if family is None or m.family == family)


def index(name: str) -> int:
    """A method's place in the registry, part of its shards' seeds."""
    get(name)
    return list(_REGISTRY).index(name)


def in_family(name: str, family: Family) -> bool:
    return name in _REGISTRY and _REGISTRY[name].family == family


def method_key(cfg: Config, name: str, hash_of: Callable[[Input], str]) -> str:
    """The hash of exactly what one method's images depend on, so that a setting another
    method reads (alpha, protected, pilot), or one that changes no image (grid), redoes none
    of this method's shards. `hash_of` gives the config hash of each input it reads."""
    method = get(name)
    g = cfg.generate
    quota = method.family == "quota"
    size = "generate.quota.n" if quota and g.quota.n is not None else "generate.n"
    keys = [size, "generate.steps", "generate.eta", "generate.shard_size", "generate.seed",
            *method.settings(cfg)]
    parts = [name, cfg.section_hash(*keys), *(hash_of(n) for n in method.inputs(cfg))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# The built-in methods, in the order that seeds their shards (never reorder: every saved
# set's images would change).
for _method in (
        MixtureMethod("gmm", lambda cfg, pi, b: np.full(len(pi), 1.0 / len(pi))),
        MixtureMethod("gmm_weighted", lambda cfg, pi, b: np.asarray(pi, dtype=np.float64)),
        MixtureMethod("gmm_tempered", lambda cfg, pi, b: tempered(pi, cfg.generate.alpha),
                      ("generate.alpha",)),
        BalancedMixture("gmm_attr"),
        SingleGaussian("single_gaussian"),
        Unconditional("unconditional"),
        Stratified("stratified"),
        QuotaSet("quota_unconditional", "unconditional"),
        QuotaSet("quota_mixture", "mixture"),
        QuotaSet("quota_adaptive", "adaptive")):
    register(_method)
BUILT_IN = frozenset(_REGISTRY)
# what `generate.methods` makes when a config names none: fixed here, so that registering a
# method later changes no existing config's methods (nor the hashes of its stages)
DEFAULTS: tuple[str, ...] = tuple(n for n, m in _REGISTRY.items() if m.default)
