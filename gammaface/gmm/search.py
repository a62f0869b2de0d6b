"""Choosing K by BIC: one fit per K, each a Ray task sharing the data through the object store."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from gammaface.gmm.mixture import GaussianMixture, check_data
from gammaface.common.progress import progress

TABLE_COLUMNS = ("k", "bic", "aic", "lower_bound", "n_iter", "converged", "seconds")


@dataclass
class SearchResult:
    table: pd.DataFrame  # one row per K, columns TABLE_COLUMNS
    mixtures: dict[int, GaussianMixture]
    chosen_k: int


def fit_one(X: np.ndarray | torch.Tensor, k: int, gmm_kwargs: dict[str, Any], threads: int | None = None
            ) -> tuple[dict[str, float], GaussianMixture]:
    """Fit K components; the row of the BIC table and the fitted mixture."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    gm = GaussianMixture(n_components=k, **gmm_kwargs).fit(X)
    n = X.shape[0]  # both criteria from the fit's own final pass over X, not two more
    row = {"k": k, "bic": gm.bic_from_score(gm.train_score_, n),
           "aic": gm.aic_from_score(gm.train_score_, n), "lower_bound": gm.lower_bound_,
           "n_iter": gm.n_iter_, "converged": bool(gm.converged_),
           "seconds": time.perf_counter() - start}
    return row, gm


def _fit_task(X: np.ndarray, k: int, gmm_kwargs: dict[str, Any], threads: int
              ) -> tuple[dict[str, float], GaussianMixture]:
    return fit_one(X, k, gmm_kwargs, threads)


def bic_search(X: np.ndarray, ks: Sequence[int], gmm_kwargs: dict[str, Any] | None = None,
               use_ray: bool = True, cpus_per_task: int = 1, gpus_per_task: float = 0.0,
               show: bool = False, resources: dict[str, float] | None = None) -> SearchResult:
    """Fit every K in `ks` and pick the one with the lowest BIC; `show`: progress as fits end;
    `resources`: custom Ray resources each fit's task asks for."""
    data = check_data(X, max(ks))
    gmm_kwargs = dict(gmm_kwargs or {})
    if use_ray:
        import ray

        task = ray.remote(_fit_task).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task,
                                             resources=resources or {})
        ref = ray.put(np.ascontiguousarray(data))
        # largest K first: its fits run longest (more components, usually more iterations),
        # so the short ones fill the gaps at the end instead of one long fit running alone
        order = sorted(ks, reverse=True)
        pending = [task.remote(ref, k, gmm_kwargs, cpus_per_task) for k in order]
        with progress(len(pending), "mixtures fitted", unit="K", disable=not show) as bar:
            left = list(pending)
            while left:
                done, left = ray.wait(left, num_returns=1)
                bar.update(len(done))
        outcomes = ray.get(pending)
    else:
        with progress(len(ks), "mixtures fitted", unit="K", disable=not show) as bar:
            outcomes = []
            for k in ks:
                outcomes.append(fit_one(data, k, gmm_kwargs))
                bar.update(1)
    table = pd.DataFrame([row for row, _ in outcomes], columns=list(TABLE_COLUMNS))
    mixtures = {int(row["k"]): gm for row, gm in outcomes}
    chosen = int(table.loc[table["bic"].idxmin(), "k"])
    return SearchResult(table.sort_values("k").reset_index(drop=True), mixtures, chosen)
