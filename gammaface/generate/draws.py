"""Rendering a shard: the DDPM loaded once, each render started the way its method's draw says
(`generate.specs`) and finished on the sampler's grid, with the quota sets' early exits and
labelling. Everything random in a shard comes from its seed: the shard's picks from one numpy
generator, each image's noise from its own torch generator, so an image does not depend on
batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gammaface.diffusion.model_io import load_ddpm
from gammaface.diffusion.sampler import forward_noise, make_scheduler, reverse_with_exits, row_generators
from gammaface.generate import shards as shard_io
from gammaface.generate.plan import Shard, image_seed
from gammaface.generate.specs import SAMPLING_FILE, DrawSpec, read_sampling
from gammaface.common.images import load_resized, to_model_space, to_uint8
from gammaface.storage.store import Store

class Renderer:
    """The DDPM and what the draws need, loaded once (in an actor, or in the driver for pilots)."""

    def __init__(self, ddpm_dir: str, t_star: int, steps: int, eta: float, temperature: float,
                 image_root: str, latent_dir: str | None, batch_size: int, threads: int,
                 use_gpu: bool) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.unet, self.train_sched = load_ddpm(ddpm_dir)
        self.unet.to(self.device)
        self.sched = make_scheduler(self.train_sched, "ddim")
        self.size = int(self.unet.config.sample_size)
        self.t_star, self.steps, self.eta, self.temperature = t_star, steps, eta, temperature
        self.image_root, self.latent_dir = image_root, latent_dir
        self.batch_size = batch_size
        self._sampling: dict[str, DrawSpec] = {}
        self._latents: np.ndarray | None = None

    def sampling(self, path: str) -> DrawSpec:
        if path not in self._sampling:
            self._sampling[path] = read_sampling(path)
        return self._sampling[path]

    def harvested(self) -> np.ndarray:
        """The harvested latents (rows), loaded on first use."""
        if self._latents is None:
            from gammaface.latents import store
            from gammaface.storage.store import Store

            self._latents = store.load_rows(Store(self.latent_dir))  # type: ignore[arg-type]
        return self._latents

    def noised(self, paths: list[str], gens: list[torch.Generator], level: int | None = None
               ) -> torch.Tensor:
        """Images from storage, noised to `level` (default t*), one generator each."""
        x0 = to_model_space(load_resized(self.image_root, paths, self.size))
        return forward_noise(x0, self.t_star if level is None else level, self.train_sched, gens)

    def start(self, spec: DrawSpec, component: int, count: int, seed: int,
              gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
        """(x at the start level, that level) for `count` images of one component."""
        return spec.start(self, component, count, np.random.default_rng(seed), gens)

    def render(self, spec: DrawSpec, component: int, count: int, seed: int) -> np.ndarray:
        """`count` finished images (uint8 NHWC) of one shard."""
        return self.render_counted(spec, component, count, seed)[0]

    def render_counted(self, spec: DrawSpec, component: int, count: int, seed: int,
                       exits: Exits | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`count` images (uint8 NHWC) of one shard, the UNet evaluations each took and which
        were stopped early by `exits` (a stopped render's image is its last x0 prediction and
        is never written)."""
        gens = row_generators([image_seed(seed, i) for i in range(count)])
        x, t_from = self.start(spec, component, count, seed, gens)
        # with no checks, exactly `reverse` (tests/diffusion/test_sampler.py)
        checks = exits or Exits((), lambda images, rows: np.zeros(len(rows), bool))
        out, ran, stopped = [], [], []
        for s in range(0, count, self.batch_size):
            part = slice(s, s + self.batch_size)

            def stop(x0: torch.Tensor, rows: np.ndarray, at: int = s) -> np.ndarray:
                return checks.stop(to_uint8(x0), rows + at)  # rows of this batch, in the shard

            done, took, ended = reverse_with_exits(
                self.unet, self.sched, x[part], t_from, self.steps, gens[part], self.eta,
                checks.checks, stop)
            out.append(to_uint8(done))
            ran.append(took)
            stopped.append(ended)
        return np.concatenate(out), np.concatenate(ran), np.concatenate(stopped)


@dataclass
class Exits:
    """When a quota render is stopped early: after each number of UNet evaluations in `checks`
    the labeller reads its x0 prediction (`stop`: the uint8 images of the renders still running
    and their numbers in the shard -> True where a render ends)."""

    checks: tuple[int, ...]
    stop: Callable[[np.ndarray, np.ndarray], np.ndarray]


def quota_marks(labeller: Any, images: np.ndarray, attributes: list[str], min_confidence: float,
                open_cells: str) -> tuple[list[list[int]], Any]:
    """[cell, confident, written] per render of a quota shard, and the labeller's frame: the
    cell by pseudo-label (-1 unknown), confident when every attribute of the cell reaches
    `min_confidence`, written when also in a cell open at planning."""
    from gammaface.classifiers.labels import conf_column
    from gammaface.data.cells import cell_codes
    from gammaface.generate.quota import eligible

    frame = labeller.frame(images)
    codes = cell_codes(frame, attributes)
    conf = frame[[conf_column(a) for a in attributes]].to_numpy().min(axis=1)
    confident = conf >= min_confidence
    written = eligible(codes, confident, open_cells)
    return [[int(c), int(f), int(w)] for c, f, w in zip(codes, confident, written)], frame


class RenderShards:
    """Ray Data actor: the DDPM loaded once; maps one shard row to a written shard folder. For
    quota sets (`quota`: method -> attributes and minimum confidence) the labeller, loaded once
    too, labels every render in the same pass, and only renders worth keeping are written.
    `publish` (a remote workdir's stage folder) receives each shard as soon as it is written."""

    def __init__(self, renderer_kwargs: dict[str, Any], out_root: str, keys: dict[str, str],
                 quota: dict[str, dict[str, Any]] | None = None,
                 labeller_dir: str | None = None, publish: str | None = None) -> None:
        self.renderer = Renderer(**renderer_kwargs)
        self.out_root = Path(out_root)
        self.publish = None if publish is None else Store(publish)
        self.keys = keys
        self.quota = quota or {}
        self.labeller = None
        if self.quota:
            from gammaface.classifiers.labeller import Labeller

            self.labeller = Labeller.load(labeller_dir or "", self.renderer.device)

    def _quota_render(self, spec: DrawSpec, shard: Shard) -> tuple[np.ndarray, list[list[int]]]:
        """A quota shard's images and per render [cell, confident, written, UNet evaluations,
        labeller evaluations]. With exit checks, a render whose x0 prediction the labeller reads
        as a cell closed at planning, or as less sure than `exit_below`, stops there: marked
        with the cell read, neither confident nor written. The decision depends only on the
        render's seed and the round's plan, so a rerun stops the same renders."""
        q = self.quota[shard.method]
        labels = np.zeros(shard.count, np.int64)
        read = np.full(shard.count, -1, np.int64)  # the cell each stopped render was read as
        exits = None
        if q.get("exit_checks"):
            def stop(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
                marks, _ = quota_marks(self.labeller, images, q["attributes"], q["exit_below"],
                                       shard.open_cells)
                m = np.array(marks, np.int64).reshape(-1, 3)
                labels[rows] += 1
                read[rows] = m[:, 0]
                return m[:, 2] == 0  # not in an open cell, or read less sure than exit_below

            exits = Exits(tuple(q["exit_checks"]), stop)
        images, ran, stopped = self.renderer.render_counted(spec, shard.component, shard.count,
                                                            shard.seed, exits)
        marks = [[int(c), 0, 0] for c in read]
        finished = np.flatnonzero(~stopped)
        if len(finished):
            final, _ = quota_marks(self.labeller, images[finished], q["attributes"],
                                   q["min_confidence"], shard.open_cells)
            for i, m in zip(finished, final):
                marks[i] = m
            labels[finished] += 1
        return images, [[*m, int(u), int(n)] for m, u, n in zip(marks, ran, labels)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = []
        for i in range(len(batch["shard"])):
            shard = Shard(str(batch["method"][i]), int(batch["shard"][i]),
                          int(batch["component"][i]), int(batch["count"][i]), int(batch["seed"][i]),
                          str(batch["open_cells"][i]))
            method_dir = self.out_root / shard.method
            spec = self.renderer.sampling(str(method_dir / SAMPLING_FILE))
            if shard.open_cells:
                images, marks = self._quota_render(spec, shard)
            else:
                images, marks = self.renderer.render(spec, shard.component, shard.count, shard.seed), None
            shard_io.write(method_dir, shard, images, self.keys[shard.method], renders=marks)
            if self.publish is not None:
                shard_io.publish(method_dir, shard, self.publish.sub(shard.method))
            done.append(shard.count)
        return {"method": batch["method"], "shard": batch["shard"], "images": np.array(done)}
