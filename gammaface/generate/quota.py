"""Quota generation: a set whose cells hold exactly the counts asked for.

Images are rendered from a proposal in rounds, labelled in the same pass, and kept while their
cell (by pseudo-label, every attribute at least the minimum confidence) still has room. A round
is planned from the rounds before it alone (the kept counts and the acceptance measured per
component), so a run that is killed and rerun plans the same rounds, renders the same images and
keeps the same ones. Proposals:
- `unconditional`: plain DDPM samples (rejection sampling);
- `mixture`: the mixture's components with equal weights;
- `adaptive`: the components weighted towards the cells still open, from the acceptance each
  component has shown so far (its composition, where known, is the prior before any render).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gammaface.generate.plan import Shard, counts_from_weights
from gammaface.common.seeds import seed_of

PROPOSALS = ("unconditional", "mixture", "adaptive")
PRIOR_RENDERS = 10.0  # pseudo-renders behind the prior acceptance of each component
EXPLORE = 0.1  # share of an adaptive round spread equally, so every estimate keeps improving
RATE_FLOOR = 1e-3  # no acceptance estimate below this: a cell never seen still gets renders


def targets(n_cells: int, n: int, shares: np.ndarray | None = None) -> np.ndarray:
    """Exact counts per cell summing to `n`: equal, or in proportion to `shares` (largest
    remainder, as every other count split of the package)."""
    w = np.ones(n_cells) if shares is None else np.asarray(shares, dtype=np.float64)
    if w.shape != (n_cells,):
        raise ValueError(f"shares must give one value per cell ({n_cells}), got shape {w.shape}.")
    return counts_from_weights(w, n)


@dataclass
class Tally:
    """What the rounds so far have shown: renders per component, confident renders per
    component and cell, and the images kept per cell; and what they cost: UNet and labeller
    evaluations, and the renders stopped early."""

    renders: np.ndarray  # (K,)
    hits: np.ndarray  # (K, C)
    kept: np.ndarray  # (C,)
    rounds: list[dict] = field(default_factory=list)
    unet: int = 0
    labeller: int = 0
    exited: int = 0

    @classmethod
    def empty(cls, n_components: int, n_cells: int) -> Tally:
        return cls(np.zeros(n_components, np.int64), np.zeros((n_components, n_cells), np.int64),
                   np.zeros(n_cells, np.int64))


def rates(tally: Tally, prior: np.ndarray | None = None) -> np.ndarray:
    """(K, C) estimated probability that a render of component k is kept for cell c (if open):
    the measured share, shrunk towards the prior (uniform over cells where none is known)."""
    k, c = tally.hits.shape
    p0 = np.full((k, c), 1.0 / c) if prior is None else np.asarray(prior, dtype=np.float64)
    return (tally.hits + PRIOR_RENDERS * p0) / (tally.renders[:, None] + PRIOR_RENDERS)


def proposal_weights(proposal: str, tally: Tally, room: np.ndarray,
                     prior: np.ndarray | None = None) -> np.ndarray:
    """Weights over the components for the next round. `adaptive` sends each open cell's
    renders to the component that has made that cell most often, as many as its room over that
    rate, and spreads a tenth of the round equally."""
    k = len(tally.renders)
    if proposal != "adaptive" or k == 1:
        return np.full(k, 1.0 / k)
    p = np.maximum(rates(tally, prior), RATE_FLOOR)
    need = np.zeros(k)
    for cell in np.flatnonzero(room > 0):
        top = p[:, cell].max()
        best = np.flatnonzero(p[:, cell] >= top * (1 - 1e-9))  # ties share (no evidence yet)
        need[best] += room[cell] / top / len(best)
    if need.sum() <= 0:
        return np.full(k, 1.0 / k)
    return (1 - EXPLORE) * need / need.sum() + EXPLORE / k


def round_renders(weights: np.ndarray, tally: Tally, room: np.ndarray, left: int,
                  smallest: int, prior: np.ndarray | None = None) -> int:
    """Renders for the next round: the open room over the expected kept share per render under
    these weights, at least `smallest` (a round has a fixed cost), at most what the budget has
    left."""
    p = rates(tally, prior)
    open_cells = room > 0
    per_render = float(weights @ p[:, open_cells].sum(axis=1))
    wanted = math.ceil(int(room.sum()) / max(per_render, RATE_FLOOR))
    return int(max(0, min(left, max(wanted, smallest))))


def round_shards(method: str, method_index: int, components: list[int], weights: np.ndarray,
                 renders: int, shard_size: int, seed: int, first_shard: int,
                 open_cells: np.ndarray) -> list[Shard]:
    """One round's shards: renders split over the components by weight, cut into shards of at
    most `shard_size`; shard ids continue from the rounds before, seeds follow from the ids."""
    counts = counts_from_weights(weights, renders)
    opened = ",".join(str(int(c)) for c in np.flatnonzero(open_cells))
    shards: list[Shard] = []
    for comp, count in zip(components, counts):
        left = int(count)
        while left > 0:
            take = min(shard_size, left)
            sid = first_shard + len(shards)
            shards.append(Shard(method, sid, int(comp), take, seed_of(seed, 17, method_index, sid),
                                open_cells=opened))
            left -= take
    return shards


def eligible(cells: np.ndarray, confident: np.ndarray, open_cells: str) -> np.ndarray:
    """Which renders of a shard are worth writing: confident, in a cell open when its round
    was planned (whether each is kept is decided after the round, in shard order)."""
    opened = np.array([int(c) for c in open_cells.split(",") if c != ""], dtype=np.int64)
    return confident & np.isin(cells, opened)


def accept(tally: Tally, targets_: np.ndarray, shard: Shard, component_index: int,
           cells: np.ndarray, confident: np.ndarray) -> np.ndarray:
    """Update the tally with one rendered shard (in plan order) and return the indices of its
    renders that are kept: confident, in a cell that still has room."""
    tally.renders[component_index] += len(cells)
    ok = confident & (cells >= 0)
    np.add.at(tally.hits[component_index], cells[ok], 1)
    kept = []
    open_now = eligible(cells, confident, shard.open_cells)
    for i in np.flatnonzero(open_now):
        c = int(cells[i])
        if tally.kept[c] < targets_[c]:
            tally.kept[c] += 1
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def summary(tally: Tally, targets_: np.ndarray, cell_names: list[str],
            unet_per_render: int) -> dict:
    """Counts asked for and kept per cell, the shortfall, and what the set cost: renders, UNet
    evaluations (a finished render takes `unet_per_render`, the grid steps from its start level
    to 0; one stopped early fewer) and labeller evaluations (one per render at its end, and one
    per exit check it reached) per kept image overall, and per cell the share of renders that
    land confidently in it and its inverse (renders per kept image of that cell had it been the
    only one open), with its UNet evaluations at the set's mean per render."""
    renders = int(tally.renders.sum())
    kept = int(tally.kept.sum())
    hits = tally.hits.sum(axis=0)
    unet_mean = tally.unet / renders if renders else float(unet_per_render)
    rows = []
    for c, name in enumerate(cell_names):
        rate = float(hits[c] / renders) if renders else float("nan")
        per_kept = (1.0 / rate) if rate > 0 else None
        rows.append({"cell": name, "target": int(targets_[c]), "kept": int(tally.kept[c]),
                     "short": int(targets_[c] - tally.kept[c]), "acceptance": rate,
                     "renders_per_kept": per_kept,
                     "unet_per_kept": None if per_kept is None else per_kept * unet_mean})
    return {"renders": renders, "kept": kept, "target": int(targets_.sum()),
            "renders_per_kept": renders / kept if kept else None,
            "unet_per_render": int(unet_per_render),
            "exited": int(tally.exited),
            "unet_evaluations": int(tally.unet),
            "unet_per_kept": tally.unet / kept if kept else None,
            "labeller_evaluations": int(tally.labeller),
            "labeller_per_kept": tally.labeller / kept if kept else None,
            "complete": bool((tally.kept >= targets_).all()), "cells": rows,
            "rounds": tally.rounds}


@dataclass
class QuotaRun:
    """One quota set's rounds: what it aims at, what it has planned, kept and spent."""

    method: str
    method_index: int
    proposal: str
    components: list[int]
    targets: np.ndarray
    budget: int  # renders at most
    shard_size: int
    seed: int
    max_rounds: int
    prior: np.ndarray | None = None
    unet_per_render: int = 0  # what a finished render costs, for marks that do not say
    plan: list[Shard] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    stopped: str = ""  # why no further round: full, budget, rounds
    tally: Tally = field(init=False)

    def __post_init__(self) -> None:
        self.tally = Tally.empty(len(self.components), len(self.targets))

    def next_round(self) -> list[Shard]:
        """The next round's shards, or [] (and `stopped` says why) when there is none."""
        room = self.targets - self.tally.kept
        left = self.budget - int(self.tally.renders.sum())
        if room.sum() <= 0:
            self.stopped = "full"
        elif left <= 0:
            self.stopped = "budget"
        elif len(self.tally.rounds) >= self.max_rounds:
            self.stopped = "rounds"
        if self.stopped:
            return []
        w = proposal_weights(self.proposal, self.tally, room, self.prior)
        n = round_renders(w, self.tally, room, left, self.shard_size, self.prior)
        shards = round_shards(self.method, self.method_index, self.components, w, n,
                              self.shard_size, self.seed, len(self.plan), room > 0)
        self.tally.rounds.append({"round": len(self.tally.rounds), "renders": n,
                                  "open_cells": int((room > 0).sum()), "room": int(room.sum()),
                                  "weights": [float(x) for x in w]})
        self.plan += shards
        return shards

    def absorb(self, shards: list[Shard], marks: dict[int, np.ndarray]) -> None:
        """Take a rendered round in plan order; `marks[shard id]` is its array of [cell (-1
        unknown), confident] per render, followed where known by [written, UNet evaluations,
        labeller evaluations] (otherwise a finished render's cost and one reading)."""
        for s in shards:
            m = np.asarray(marks[s.shard], dtype=np.int64).reshape(s.count, -1)
            self.kept[s.shard] = accept(self.tally, self.targets, s,
                                        self.components.index(s.component), m[:, 0], m[:, 1] > 0)
            if m.shape[1] >= 5:
                self.tally.unet += int(m[:, 3].sum())
                self.tally.labeller += int(m[:, 4].sum())
                self.tally.exited += int((m[:, 3] < self.unet_per_render).sum())
            else:
                self.tally.unet += self.unet_per_render * s.count
                self.tally.labeller += s.count
        self.tally.rounds[-1]["kept_after"] = int(self.tally.kept.sum())


def run_rounds(runs: list[QuotaRun], pending: Callable[[QuotaRun, list[Shard]], list[Shard]],
               render: Callable[[list[Shard]], None], marks: Callable[[QuotaRun, Shard], Any],
               echo: Callable[[str], None]) -> dict[str, int]:
    """Every quota set's rounds, the sets' rounds together: each round planned from what the
    earlier ones kept; of its shards, those `pending` finds not yet on disk (a resumed run
    renders only those) go to one `render` call with every set's; then each shard's `marks`
    (its array per render, `QuotaRun.absorb`) are taken in. Returns the renders made by this
    call per set."""
    made_by = {r.method: 0 for r in runs}
    active = list(runs)
    while active:
        rounds = {r.method: r.next_round() for r in active}
        active = [r for r in active if rounds[r.method]]
        todo = [s for r in active for s in pending(r, rounds[r.method])]
        if todo:
            planned = sum(len(v) for v in rounds.values())
            echo(f"  quota round {len(active[0].tally.rounds) - 1}: {sum(s.count for s in todo)} "
                 f"renders in {len(todo)} of {planned} shards ({', '.join(r.method for r in active)})")
            render(todo)
            for s in todo:
                made_by[s.method] += s.count
        for r in active:
            r.absorb(rounds[r.method], {s.shard: marks(r, s) for s in rounds[r.method]})
    return made_by
