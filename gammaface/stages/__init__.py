"""The stages: one package each, which declares the stage and holds its work.

A stage's `__init__` states what the pipeline needs to know of it without running it (and
without importing torch, Ray or the libraries its work calls): its name, its folder in the
workdir, the stages whose outputs it reads, the config keys in its hash, whether its work runs
out of the driver (so `ray.resources` may place it) and which of the libraries' resume-key
inputs it makes. Its `work` module has one public `run(ctx: StageContext) -> StageResult`
(and, where it reads inputs from outside the workdir, `check(cfg)`): it reads the artifacts of
the stages it needs, writes only its own folder, calls Ray and logs to MLflow; the work itself
is done by the libraries below (`data`, `diffusion`, `latents`, `gmm`, `classifiers`,
`generate`, `downstream`, `metrics`). The pipeline decides which stages run and writes each
one's `stage.json` after it returns.

A new stage is a new package here and its name in ORDER.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping

from gammaface.common.errors import UserError

if TYPE_CHECKING:
    from gammaface.config import Config
    from gammaface.generate.methods import Input

# The pipeline's order: a stage comes after every stage it can need
ORDER = ("prepare", "train_ddpm", "train_classifiers", "train_judge", "harvest", "gmm_search",
         "generate", "pseudo_label", "audit", "downstream", "report")


@dataclass(frozen=True)
class Stage:
    """What a stage declares of itself."""

    name: str
    folder: str | Callable[[Config], str]  # relative to the workdir; a function where it varies
    needs: Callable[[Config], tuple[str, ...]]  # the stages whose outputs it reads, for this config
    keys: Callable[[Config], tuple[str, ...]]  # the config keys (sections or dotted) in its hash
    placed: bool = False  # its tasks, actors or training workers run out of the driver
    makes: Input | None = None  # the input of a method's or a job's resume key it makes

    @property
    def work(self) -> str:
        """The module whose `run(ctx)` does the stage's work (imported only to run it)."""
        return f"{__name__}.{self.name}.work"

    def folder_in(self, cfg: Config) -> str:
        return self.folder(cfg) if callable(self.folder) else self.folder


def fixed(*values: str) -> Callable[[Config], tuple[str, ...]]:
    """`needs` or `keys` that do not depend on the config."""
    return lambda cfg: values


def section_keys(section: str, *operational: str) -> tuple[str, ...]:
    """Every key of a config section but those that change how a stage runs, not what it
    produces."""
    from gammaface.config import Config

    fields = Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    return tuple(f"{section}.{f}" for f in fields if f not in operational)


@cache
def declared() -> tuple[Stage, ...]:
    """Every stage's declaration, in pipeline order."""
    found = []
    for name in ORDER:
        stage = importlib.import_module(f"{__name__}.{name}").STAGE
        if stage.name != name:
            raise RuntimeError(f"package {__name__}.{name} declares stage {stage.name!r}")
        found.append(stage)
    return tuple(found)


@cache
def by_name() -> Mapping[str, Stage]:
    return MappingProxyType({s.name: s for s in declared()})


def folder(name: str, cfg: Config) -> str:
    """Where stage `name` keeps its artifacts, relative to the workdir."""
    return by_name()[name].folder_in(cfg)


def folders(cfg: Config) -> dict[str, str]:
    """Every stage's folder, relative to the workdir (what a StageContext is handed)."""
    return {s.name: s.folder_in(cfg) for s in declared()}


def makers() -> dict[Input, str]:
    """The stage that makes each input of a library's resume key (what a StageContext is
    handed)."""
    return {s.makes: s.name for s in declared() if s.makes is not None}


def placed() -> tuple[str, ...]:
    """The stages whose work `ray.resources` may place."""
    return tuple(s.name for s in declared() if s.placed)


def check_placement(cfg: Config, source: str = "config") -> None:
    """`ray.resources` names only stages with work to place (the config checks the amounts;
    which stages exist is the stages' to say). `source`: the config's file, for the sentence."""
    where = placed()
    for name in cfg.ray.resources:
        if name not in where:
            raise UserError(f"{source}: key 'ray.resources.{name}' names no stage with work to "
                            f"place; name one of {', '.join(where)}.")
