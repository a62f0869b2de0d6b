"""A finished run's generator in a notebook: faces from one component, a method's mix, or exact
counts per cell.

    from gammaface.sampling import Sampler
    s = Sampler.from_config("jobs/demo.yaml")
    faces = s.component(0, 16)                                   # uint8 (16, H, W, 3)
    mix = s.method("gmm_attr", 64)                               # the method's counts per component
    faces, labels = s.cells({"old:female:black": 8, "young:male:white": 8})

It reads the run's artifacts (the DDPM, the chosen mixture as the generate stage wrote it for
its draws, the labeller) by the paths the stages wrote them to, and renders in this process with
the generate stage's own renderer; nothing here needs Ray or MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gammaface.run import layout, stage
from gammaface.classifiers.labeller import Labeller
from gammaface.config import Config, load
from gammaface.data import manifest
from gammaface.data.cells import cells
from gammaface.diffusion.model_io import load_scheduler
from gammaface.diffusion.sampler import effective_t, make_scheduler
from gammaface.common.errors import UserError
from gammaface.generate import methods as generation
from gammaface.generate import quota
from gammaface.generate.draws import Renderer, quota_marks
from gammaface.generate.specs import SAMPLING_FILE, read_sampling
from gammaface.generate.plan import counts_from_weights
from gammaface.latents.store import META_FILE
from gammaface.common.seeds import seed_of
from gammaface.stages import folder as stage_folder
from gammaface.storage.store import Store


class Sampler:
    """The DDPM, the mixture's draws and the labeller of one finished run."""

    def __init__(self, cfg: Config, use_gpu: bool = False, batch_size: int | None = None) -> None:
        # the renderer reads local files: a remote workdir's stages are fetched first
        workdir = stage.local_view(Store(cfg.workdir), [stage_folder(n, cfg) for n in (
            "prepare", "train_ddpm", "harvest", "generate", "train_classifiers")])
        self.cfg = cfg
        folder = {n: workdir.sub(stage_folder(n, cfg))
                  for n in ("train_ddpm", "harvest", "generate", "train_classifiers")}
        for name in ("train_ddpm", "harvest", "generate"):
            if stage.completed_hash(folder[name]) is None:
                raise UserError(f"stage {name!r} has not completed in {workdir.root}; run the "
                                "pipeline first (gammaface run CONFIG).")
        mixture_sets = [m for m in cfg.generate.methods
                        if generation.in_family(m, "mixture")
                        or (generation.in_family(m, "quota") and generation.get(m).proposal != "unconditional")]
        if not mixture_sets:
            raise UserError("generate.methods holds no mixture method, so the run wrote no "
                            "mixture draws to sample from.")
        self.spec = read_sampling(folder["generate"].path(mixture_sets[0], SAMPLING_FILE))
        # cells() draws as the run's quota sets drew (their own draw and start level), where it
        # made one
        quota_sets = [m for m in mixture_sets if generation.in_family(m, "quota")]
        self.quota_spec = (read_sampling(folder["generate"].path(quota_sets[0], SAMPLING_FILE))
                           if quota_sets else self.spec)
        g = cfg.generate
        ddpm_dir = folder["train_ddpm"].path()
        t_star = int(folder["harvest"].read_json(META_FILE)["t_star"])
        t_used = effective_t(make_scheduler(load_scheduler(ddpm_dir), "ddim"), g.steps, t_star)
        _, image_root = manifest.read(workdir.sub(layout.dataset_dir(cfg)).path(manifest.MANIFEST_FILE))
        self.renderer = Renderer(ddpm_dir, t_used, g.steps, g.eta, g.temperature, image_root,
                                 folder["harvest"].path(), batch_size or g.batch_size,
                                 torch.get_num_threads(), use_gpu)
        self.n_components = self.spec.n_components()
        self._labeller_dir = folder["train_classifiers"].path()
        self._labeller: Labeller | None = None
        self._generate = folder["generate"]

    @classmethod
    def from_config(cls, path: str | Path, overrides: dict | None = None, **kwargs) -> Sampler:
        """The run of a config file (with `overrides` as `--set` would give them)."""
        return cls(load(path, overrides), **kwargs)

    @property
    def labeller(self) -> Labeller:
        if self._labeller is None:
            self._labeller = Labeller.load(self._labeller_dir, self.renderer.device)
        return self._labeller

    def component(self, k: int, n: int, seed: int = 0) -> np.ndarray:
        """`n` faces (uint8 NHWC) drawn from component `k`."""
        if not 0 <= k < self.n_components:
            raise UserError(f"component {k} does not exist; the mixture has {self.n_components}.")
        return self.renderer.render(self.spec, k, n, seed_of(seed, 31, k))

    def method(self, name: str, n: int, seed: int = 0) -> np.ndarray:
        """`n` faces split over the components as mixture method `name` weights them (the
        weights the generate stage recorded in compositions.csv)."""
        if not generation.in_family(name, "mixture"):
            raise UserError(f"{name!r} is not a mixture method ({', '.join(generation.names('mixture'))}).")
        table = pd.read_csv(self._generate.path(layout.GENERATED_COMPOSITIONS))
        counts = counts_from_weights(table[f"weight/{name}"].to_numpy(), n)
        parts = [self.component(k, int(c), seed) for k, c in enumerate(counts) if c > 0]
        return np.concatenate(parts)

    def cells(self, counts: dict[str, int], attributes: list[str] | None = None, seed: int = 0,
              budget: float = 20.0, min_confidence: float = 0.0, round_size: int = 256
              ) -> tuple[np.ndarray, pd.DataFrame]:
        """Faces with exactly `counts` images per cell ("class:class" of `attributes`, default
        the protected ones; cells not named get none), by the adaptive quota proposal, and the
        labeller's labels of each; stops at `budget` renders per image and says what is short."""
        attrs = list(attributes or self.cfg.generate.protected)
        names = [":".join(c) for c in cells(attrs)]
        unknown = sorted(set(counts) - set(names))
        if unknown:
            raise UserError(f"{unknown[0]!r} is not a cell of {':'.join(attrs)} (cells look like "
                            f"{names[0]!r}).")
        targets = np.array([int(counts.get(c, 0)) for c in names])
        run = quota.QuotaRun("sampler", 0, "adaptive", list(range(self.n_components)), targets,
                             int(np.ceil(budget * targets.sum())), round_size, seed, 1000)
        images: dict[tuple[int, int], np.ndarray] = {}
        labels: dict[tuple[int, int], pd.Series] = {}
        while True:
            shards = run.next_round()
            if not shards:
                break
            marks = {}
            for s in shards:
                made = self.renderer.render(self.quota_spec, s.component, s.count, s.seed)
                m, frame = quota_marks(self.labeller, made, attrs, min_confidence, s.open_cells)
                marks[s.shard] = np.array([[c, f] for c, f, _ in m], dtype=np.int64).reshape(-1, 2)
                for i in np.flatnonzero([w for _, _, w in m]):
                    images[(s.shard, int(i))], labels[(s.shard, int(i))] = made[i], frame.iloc[i]
            run.absorb(shards, marks)
        kept = [(sid, int(i)) for sid, idx in sorted(run.kept.items()) for i in idx]
        if run.stopped != "full":
            short = {n: int(t - k) for n, t, k in zip(names, targets, run.tally.kept) if t > k}
            raise UserError(f"the budget of {budget} renders per image ran out with cells short: "
                            + ", ".join(f"{n} by {v}" for n, v in short.items())
                            + "; raise budget or lower min_confidence.")
        if not kept:
            return np.zeros((0, self.renderer.size, self.renderer.size, 3), np.uint8), pd.DataFrame()
        return (np.stack([images[k] for k in kept]),
                pd.DataFrame([labels[k] for k in kept]).reset_index(drop=True))
