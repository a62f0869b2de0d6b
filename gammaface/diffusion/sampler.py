"""A short loop over a diffusers scheduler that can stop at, or start from, a timestep t*.

Timestep convention: `x` at timestep t is noised to the level alphas_cumprod[t] and is the input
of the scheduler step at t. `t_from = T` (num_train_timesteps) means pure noise, which enters
the grid at its largest timestep, as in diffusers' pipelines; `t_to = 0` means the clean sample,
after the step at timestep 0. An intermediate t is snapped to the sampling grid, so stopping at
t* and starting again from t* walks exactly the grid of one uninterrupted run.

Noise comes from CPU generators, one per row when a list is given, so a row's result does not
depend on the batch it was computed in, nor on the device.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, SchedulerMixin, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

log = logging.getLogger(__name__)

Kind = Literal["ddim", "ddpm"]
Generators = torch.Generator | Sequence[torch.Generator] | None


def make_scheduler(train_scheduler: SchedulerMixin, kind: Kind = "ddim") -> SchedulerMixin:
    """A sampling scheduler with the training noise schedule. DDIM keeps diffusers' default
    "leading" spacing: its step is wrong with other spacings in this diffusers version."""
    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    config = dict(train_scheduler.config)
    config["timestep_spacing"] = "leading"
    return cls.from_config(config)


def grid(scheduler: SchedulerMixin, steps: int) -> list[int]:
    """The descending timestep grid of a `steps`-step run."""
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def snap(t: int, timesteps: Sequence[int]) -> int:
    """The grid timestep closest to t (ties go to the larger, noisier one)."""
    return min(timesteps, key=lambda g: (abs(g - t), -g))


def _span(timesteps: Sequence[int], t_from: int, t_to: int, num_train: int) -> list[int]:
    """Grid timesteps whose step is taken to go from level t_from to level t_to."""
    start = max(timesteps) if t_from >= num_train else snap(t_from, timesteps)
    if t_to <= 0:
        return [t for t in timesteps if t <= start]
    stop = snap(t_to, timesteps)
    if stop > start:
        raise ValueError(f"t_to={t_to} lies above t_from={t_from} on this grid.")
    return [t for t in timesteps if stop < t <= start]


def evaluations(scheduler: SchedulerMixin, steps: int, t_from: int, t_to: int = 0) -> int:
    """UNet evaluations that `reverse` spends on one image from level `t_from` to `t_to` on a
    `steps`-step grid (one per grid step it takes): what a render costs."""
    num_train = int(scheduler.config.num_train_timesteps)
    return len(_span(grid(scheduler, steps), t_from, t_to, num_train))


def noise_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the CPU (per row with a generator list)."""
    gen = list(generator) if isinstance(generator, (list, tuple)) else generator
    return randn_tensor(tuple(x.shape), generator=gen, device=torch.device("cpu"),
                        dtype=torch.float32).to(device=x.device, dtype=x.dtype)


@torch.no_grad()
def reverse(unet: UNet2DModel, scheduler: SchedulerMixin, x: torch.Tensor, t_from: int, t_to: int,
            steps: int, generator: Generators = None, eta: float = 0.0) -> torch.Tensor:
    """Run the reverse process on a batch from level `t_from` down to level `t_to`.

    `scheduler` is a DDIM or DDPM scheduler (see `make_scheduler`); `eta` applies to DDIM
    (0: deterministic, 1: DDPM-like variance).
    """
    span = _span(grid(scheduler, steps), t_from, t_to, int(scheduler.config.num_train_timesteps))
    sample = x.to(next(unet.parameters()).device)
    gen = list(generator) if isinstance(generator, (list, tuple)) else generator
    with _evaluating(unet):
        for t in span:
            sample, _ = _step(unet, scheduler, sample, t, gen, eta)
    return sample


@torch.no_grad()
def reverse_with_exits(unet: UNet2DModel, scheduler: SchedulerMixin, x: torch.Tensor, t_from: int,
                       steps: int, generator: Sequence[torch.Generator], eta: float,
                       checks: Sequence[int],
                       stop: Callable[[torch.Tensor, np.ndarray], np.ndarray]
                       ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """`reverse` from `t_from` to the clean sample, where after each number of UNet evaluations
    in `checks` the rows still running hand their one-step prediction of x0 (and their row
    numbers in `x`) to `stop`, which answers one bool per row: True ends that row there. Returns every row's sample (a stopped
    row's is its last x0 prediction), the UNet evaluations each row took and which rows stopped.
    Each row keeps its own generator, so a row's result depends on the rows beside it only
    through the float sums of a smaller batch."""
    span = _span(grid(scheduler, steps), t_from, 0, int(scheduler.config.num_train_timesteps))
    sample = x.to(next(unet.parameters()).device).clone()
    running = np.arange(len(sample))  # the rows still being finished, in order
    ran = np.zeros(len(sample), np.int64)
    stopped = np.zeros(len(sample), bool)
    gens = list(generator)
    with _evaluating(unet):
        for taken, t in enumerate(span, 1):
            if not len(running):
                break
            current, x0 = _step(unet, scheduler, sample[running], t, [gens[i] for i in running], eta)
            ran[running] += 1
            sample[running] = current
            if taken in checks and taken < len(span):
                ends = np.asarray(stop(x0, running), bool)
                sample[running[ends]] = x0[ends]
                stopped[running[ends]] = True
                running = running[~ends]
    return sample, ran, stopped


def _step(unet: UNet2DModel, scheduler: SchedulerMixin, sample: torch.Tensor, t: int,
          gen: Generators, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One grid step at timestep t: the next sample and the step's prediction of x0."""
    t_batch = torch.full((sample.shape[0],), t, device=sample.device, dtype=torch.long)
    eps = unet(sample, t_batch).sample
    if isinstance(scheduler, DDIMScheduler):
        variance_noise = noise_like(sample, gen) if eta > 0 else None
        out = scheduler.step(eps, t, sample, eta=eta, variance_noise=variance_noise)
    else:
        out = scheduler.step(eps, t, sample, generator=gen)
    return out.prev_sample, out.pred_original_sample


@contextmanager
def _evaluating(unet: UNet2DModel) -> Iterator[None]:
    was_training = unet.training
    unet.eval()
    try:
        yield
    finally:
        unet.train(was_training)


def effective_t(scheduler: SchedulerMixin, steps: int, t: int) -> int:
    """The grid timestep that `t` snaps to for a `steps`-step run (log it where t* is used)."""
    timesteps = grid(scheduler, steps)
    snapped = snap(t, timesteps)
    if snapped != t:
        log.info("t*=%d is not on the %d-step grid; using %d", t, steps, snapped)
    return snapped


def forward_noise(x0: torch.Tensor, t: int, scheduler: SchedulerMixin,
                  generator: Generators = None) -> torch.Tensor:
    """A draw from q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
    noise = noise_like(x0, generator)
    timesteps = torch.full((x0.shape[0],), int(t), dtype=torch.long)
    return scheduler.add_noise(x0, noise, timesteps.to(x0.device))


def renoise(x_t: torch.Tensor, t: int, s: int, scheduler: SchedulerMixin,
            generator: Generators = None) -> torch.Tensor:
    """A draw from q(x_s | x_t) for s >= t: N(sqrt(abar_s / abar_t) x_t, (1 - abar_s / abar_t) I),
    the forward process continued from level t to the noisier level s."""
    if s < t:
        raise ValueError(f"renoise goes up the noise levels only: s={s} lies below t={t}.")
    abar = scheduler.alphas_cumprod.to(torch.float64)
    ratio = float(abar[int(s)] / abar[int(t)])
    return ratio ** 0.5 * x_t + (1.0 - ratio) ** 0.5 * noise_like(x_t, generator)


def row_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]
