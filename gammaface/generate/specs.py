"""What a method's renders start from: one dataclass per kind of draw, and the sampling file
that holds it (`sampling.npz` in the method's folder).

Kinds (`kind` names each in the file):
- `gaussian` (GaussianDraw): x_{t*} ~ N(mu_k, diag (temperature sigma_k)^2) in the mixture's
  space, mapped back to latent space (PCA adds the discarded variance back as noise);
- `resample` (ResampleDraw): an actual harvested latent of component k, picked with probability
  proportional to its posterior responsibility; for `forward` latents its source image is
  noised afresh. With `t_start` (a quota set's `generate.quota.t_start`) the pick is noised on
  up to that level and finished from there: the further up, the less of the source face
  survives;
- `images` (ImagesDraw): a training image of the shard's protected cell, noised to t*
  (stratified);
- `noise` (NoiseDraw): x_T ~ N(0, I), the plain DDPM sampler (unconditional).

A new way to start renders is a subclass registered with `register_draw`: its fields are what
the file keeps, its `start` what a render begins from. This module imports no torch at load
(the method registry, which the config reads, names these types); `start` imports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from gammaface.generate.draws import Renderer

SAMPLING_FILE = "sampling.npz"  # per method: what its draws start from


@dataclass(frozen=True, eq=False)
class DrawSpec:
    """What a method's renders start from. Subclasses name their `kind` and implement `start`."""

    kind: ClassVar[str] = ""

    def start(self, r: Renderer, component: int, count: int, rng: np.random.Generator,
              gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
        """(x at the start level, that level) for `count` renders of one component; every
        random choice from `rng` (the shard's) and each render's noise from its own generator."""
        raise NotImplementedError

    def start_level(self, t_star: int) -> int:
        """The noise level renders start from, where it is not the top of the schedule."""
        return t_star

    def n_components(self) -> int:
        raise ValueError(f"a {self.kind} draw has no mixture components.")


DRAWS: dict[str, type[DrawSpec]] = {}


def register_draw(cls: type[DrawSpec]) -> type[DrawSpec]:
    """Add a kind of draw (a class decorator); its `kind` must be new."""
    if not cls.kind or cls.kind in DRAWS:
        raise ValueError(f"draw kind {cls.kind!r} is empty or already registered.")
    DRAWS[cls.kind] = cls
    return cls


@register_draw
@dataclass(frozen=True, eq=False)
class NoiseDraw(DrawSpec):
    kind: ClassVar[str] = "noise"

    def start(self, r: Renderer, component: int, count: int, rng: np.random.Generator,
              gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
        import torch

        x = torch.stack([torch.randn((3, r.size, r.size), generator=g) for g in gens])
        return x, int(r.sched.config.num_train_timesteps)


@register_draw
@dataclass(frozen=True, eq=False)
class GaussianDraw(DrawSpec):
    """Per component: means and diagonal variances in the mixture's space; with the PCA that
    space came from where it is not the latents' own."""

    kind: ClassVar[str] = "gaussian"
    means: np.ndarray
    variances: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    pca_residual_variance: np.ndarray | None = None

    def start(self, r: Renderer, component: int, count: int, rng: np.random.Generator,
              gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
        import torch

        from gammaface.gmm.projection import Projection

        mu, sd = self.means[component], np.sqrt(self.variances[component])
        z = mu + r.temperature * sd * rng.standard_normal((count, len(mu)))
        if self.pca_components is not None:
            # the three PCA fields are written together (generate's _mixture_spec)
            assert self.pca_mean is not None and self.pca_residual_variance is not None
            proj = Projection(self.pca_mean, self.pca_components, float(self.pca_residual_variance))
            z = proj.back(z.astype(np.float32), rng)
        return torch.from_numpy(np.asarray(z, np.float32).reshape(count, 3, r.size, r.size)), r.t_star

    def n_components(self) -> int:
        return len(self.means)


@register_draw
@dataclass(frozen=True, eq=False)
class ResampleDraw(DrawSpec):
    """Per component, each harvested latent's probability of being picked (K, n); where the
    latents came from (`forward`: their source images, in `source_paths`, noised afresh)."""

    kind: ClassVar[str] = "resample"
    probs: np.ndarray
    source: str
    source_paths: list[str]
    t_start: int | None = None

    def __post_init__(self) -> None:
        if self.t_start is not None:  # the file keeps it as a 0-d array
            object.__setattr__(self, "t_start", int(self.t_start))

    def start(self, r: Renderer, component: int, count: int, rng: np.random.Generator,
              gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
        import torch

        from gammaface.diffusion.sampler import renoise

        probs = self.probs[component]
        rows = rng.choice(len(probs), size=count, p=probs / probs.sum())
        level = self.start_level(r.t_star)
        if self.source == "forward":
            return r.noised([self.source_paths[i] for i in rows], gens, level), level
        x = torch.from_numpy(r.harvested()[rows].reshape(count, 3, r.size, r.size))
        if level > r.t_star:
            x = renoise(x, r.t_star, level, r.train_sched, gens)
        return x, level

    def start_level(self, t_star: int) -> int:
        return t_star if self.t_start is None else self.t_start

    def n_components(self) -> int:
        return len(self.probs)


@register_draw
@dataclass(frozen=True, eq=False)
class ImagesDraw(DrawSpec):
    """Training images per protected cell (cell code as a string -> paths)."""

    kind: ClassVar[str] = "images"
    cell_paths: dict[str, list[str]]

    def start(self, r: Renderer, component: int, count: int, rng: np.random.Generator,
              gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
        pool = self.cell_paths[str(component)]
        picks = rng.integers(0, len(pool), size=count)
        return r.noised([pool[i] for i in picks], gens), r.t_star


def write_sampling(path: Path, spec: DrawSpec) -> None:
    """A method's sampling file: its kind and its fields, lists, mappings and text in a JSON
    header, arrays beside it (nothing that needs unpickling)."""
    meta: dict[str, Any] = {"kind": spec.kind}
    payload: dict[str, Any] = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if value is None:
            continue
        if isinstance(value, (list, dict, str)):
            meta[f.name] = value
        else:
            payload[f.name] = np.asarray(value)
    np.savez(path, meta=np.array(json.dumps(meta)), **payload)


def read_sampling(path: str | Path) -> DrawSpec:
    with np.load(path, allow_pickle=False) as z:
        values: dict[str, Any] = json.loads(str(z["meta"]))
        for key in z.files:
            if key != "meta":
                values[key] = z[key]
    kind = values.pop("kind")
    if kind not in DRAWS:
        raise ValueError(f"{path}: unknown draw kind {kind!r}; expected one of {', '.join(DRAWS)}.")
    return DRAWS[kind](**values)
