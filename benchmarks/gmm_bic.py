"""The GMM against scikit-learn's GaussianMixture(covariance_type="diag"): one fit, and the whole
BIC search as the `gmm_search` stage runs it.

    python benchmarks/gmm_bic.py [--n 20000] [--d 3072] [--k-max 11] [--device cpu|cuda]
                                 [--skip-search] [--skip-fit]

One fit: K = 4 from the same start (weights, means and variances given to both) on two data
sets, four close diagonal components and rows that look like forward latents; wall time,
iterations, relative BIC difference and the memory each fit adds above the data.

The search: the latents written as a latent store (float32 `.npy` shards and an index), then
K = 1..k_max with k-means++ starts from the same seed (init_params="k-means++" for both:
scikit-learn's default is kmeans). gammaface reads the store and runs
`bic_search` on a local Ray (one task per K, the data put once in the object store), exactly as
the stage does; scikit-learn reads the same store and fits every K in turn. scikit-learn is given
the rows as float64: on float32 input it runs EM in float32, whose lower bound at this d keeps
too few digits for its own convergence test. Each side runs in child processes of its own;
memory is the peak, above the side's start, of the summed proportional set size (PSS) of its
processes (for Ray: the driver, the raylet and every worker, the workers started and warm
before the clock starts), sampled every 200 ms (reading smaps_rollup walks a process's page
tables, so a faster sampler would slow what it measures). Each search runs twice, each time in a
fresh process: timed with no sampler, then sampled for memory; the one fit (a single process,
cheap to sample) is timed and sampled in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time

import numpy as np

FIT_K = 4


def latent_like(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows that look like forward latents: a few clusters of smooth images plus unit noise."""
    rng = np.random.default_rng(seed)
    side = int(round((d / 3) ** 0.5))
    centres = rng.normal(0, 0.6, (6, 3, side // 4 + 1, side // 4 + 1))
    centres = centres.repeat(4, axis=2).repeat(4, axis=3)[:, :, :side, :side].reshape(6, -1)[:, :d]
    z = rng.choice(6, n, p=np.array([3, 2, 2, 1, 1, 1]) / 10)
    return (centres[z] + rng.standard_normal((n, d)) * 0.8).astype(np.float32)


def close_components(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Four diagonal components whose means are 0.15 apart per dimension: EM needs many steps."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.15, (FIT_K, d))
    sigmas = rng.uniform(0.8, 1.2, (FIT_K, d))
    z = rng.choice(FIT_K, n)
    return (means[z] + rng.standard_normal((n, d)) * sigmas[z]).astype(np.float32)


DATA = {"close": close_components, "latent-like": latent_like}


def fit_start(X: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"weights": np.full(FIT_K, 1 / FIT_K),
            "means": X[rng.choice(len(X), FIT_K, replace=False)].astype(np.float64),
            "variances": np.ones((FIT_K, X.shape[1]))}


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the process ended
        pass
    return 0.0


def _tree(root: int) -> list[int]:
    """root and every process below it (a local Ray's raylet and workers descend from the
    driver that started it)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


class PeakMemory:
    """Peak summed PSS (shared pages split between their users, so the object store counts
    once) of this process and all its descendants, above the figure at start, sampled every
    200 ms (Linux). `on=False`: no sampling, `added_mb()` is None.

    Sampling a local Ray's processes is not free: reading smaps_rollup walks the page tables
    of every worker and of the object store mapped into each, which took 4.9 s of CPU during a
    15.8 s search on 2 cores. So the searches are timed in runs without it and their memory
    measured in runs of their own."""

    def __init__(self, on: bool = True) -> None:
        self.on = on
        if not on:
            return
        self.start = self._now()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _now(self) -> float:
        return sum(_pss_mb(pid) for pid in _tree(os.getpid()))

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._now())

    def added_mb(self) -> float | None:
        if not self.on:
            return None
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._now()) - self.start


def _fit_child(side: str, args: dict, queue: mp.Queue) -> None:
    X = DATA[args["data"]](args["n"], args["d"])
    p = fit_start(X)
    if side == "sklearn":
        from sklearn.mixture import GaussianMixture as Sk

        def fit():
            return Sk(FIT_K, covariance_type="diag", weights_init=p["weights"],
                      means_init=p["means"], precisions_init=1 / p["variances"]).fit(X)
    else:
        from gammaface.gmm import GaussianMixture

        def fit():
            return GaussianMixture(FIT_K, backend="torch", device=args["device"],
                                   weights_init=p["weights"], means_init=p["means"],
                                   variances_init=p["variances"]).fit(X)
    memory = PeakMemory()
    start = time.perf_counter()
    gm = fit()
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "n_iter": int(gm.n_iter_), "bic": float(gm.bic(X)),
               "added_mb": memory.added_mb()})


def _search_child(side: str, args: dict, queue: mp.Queue) -> None:
    from gammaface.latents import store as latent_store
    from gammaface.storage.store import Store

    folder = Store(args["store"])
    ks = list(range(1, args["k_max"] + 1))
    if side == "sklearn":
        from sklearn.mixture import GaussianMixture as Sk

        memory = PeakMemory(args["sample"])
        start = time.perf_counter()
        X = latent_store.load_rows(folder).astype(np.float64)
        rows = []
        for k in ks:
            gm = Sk(k, covariance_type="diag", init_params="k-means++",
                    random_state=args["seed"]).fit(X)
            rows.append({"k": k, "bic": float(gm.bic(X)), "n_iter": int(gm.n_iter_)})
    else:
        import ray

        from gammaface.gmm.search import bic_search
        from gammaface.config import RayConfig
        from gammaface.distributed.runtime import connect

        connect(RayConfig(num_cpus=os.cpu_count()))  # the local Ray the stages start
        # workers that have imported torch and the mixture, as a stage's are after its first K:
        # what is measured is the search, not the start of Ray's worker processes
        bic_search(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32),
                   range(1, os.cpu_count() + 1), {"backend": "torch"})
        memory = PeakMemory(args["sample"])
        start = time.perf_counter()
        X = latent_store.load_rows(folder)
        result = bic_search(X, ks, {"random_state": args["seed"], "backend": "torch",
                                    "device": args["device"]})
        rows = result.table[["k", "bic", "n_iter"]].to_dict("records")
        seconds = time.perf_counter() - start
        queue.put({"seconds": seconds, "added_mb": memory.added_mb(),
                   "rows": [{k: float(v) for k, v in r.items()} for r in rows]})
        ray.shutdown()
        return
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "added_mb": memory.added_mb(), "rows": rows})


def _in_child(target, side: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(side, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def one_fit(a: argparse.Namespace) -> None:
    print(f"One fit, K = {FIT_K} from the same start, N = {a.n}, d = {a.d} "
          f"(data {a.n * a.d * 4 / 2**20:.0f} MB as float32)")
    for data in DATA:
        args = {"data": data, "n": a.n, "d": a.d, "device": a.device}
        ours, ref = (_in_child(_fit_child, side, args) for side in ("torch", "sklearn"))
        rel = abs(ours["bic"] - ref["bic"]) / abs(ref["bic"])
        print(f"  {data:<12} torch {ours['seconds']:6.1f} s, {ours['n_iter']:3d} iterations, "
              f"+{ours['added_mb']:5.0f} MB | scikit-learn {ref['seconds']:6.1f} s, "
              f"{ref['n_iter']:3d} iterations, +{ref['added_mb']:5.0f} MB | "
              f"{ref['seconds'] / ours['seconds']:.2f}x faster, per iteration "
              f"{(ref['seconds'] / ref['n_iter']) / (ours['seconds'] / ours['n_iter']):.2f}x, "
              f"BIC relative difference {rel:.1e}")


def search(a: argparse.Namespace) -> None:
    from gammaface.latents import store as latent_store
    from gammaface.storage.store import Store

    X = latent_like(a.n, a.d)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Store(tmp)
        import pandas as pd

        shard_rows, index = 2000, []
        for first in range(0, len(X), shard_rows):
            name = latent_store.write_shard(folder, first, X[first:first + shard_rows])
            m = len(X[first:first + shard_rows])
            index.append(pd.DataFrame({"row": np.arange(first, first + m), "shard": name,
                                       "offset": np.arange(m), "seed": 0, "source_path": ""}))
        folder.write_parquet(latent_store.INDEX_FILE, pd.concat(index, ignore_index=True))
        del X
        args = {"store": tmp, "k_max": a.k_max, "seed": a.seed, "device": a.device}
        # each side twice, in a fresh process each time: timed with no memory sampler, then
        # its memory (see PeakMemory)
        ours, ref = ({**_in_child(_search_child, side, {**args, "sample": False}),
                      "added_mb": _in_child(_search_child, side, {**args, "sample": True})["added_mb"]}
                     for side in ("torch", "sklearn"))
    bic_ours = {int(r["k"]): r["bic"] for r in ours["rows"]}
    bic_ref = {int(r["k"]): r["bic"] for r in ref["rows"]}
    iters = {int(r["k"]): (int(o["n_iter"]), int(r["n_iter"]))
             for o, r in zip(ours["rows"], ref["rows"])}
    worst = max(abs(bic_ours[k] - bic_ref[k]) / abs(bic_ref[k]) for k in bic_ref)
    print(f"The search K = 1..{a.k_max} as the stage runs it (read the store, k-means++, EM, "
          f"BIC), N = {a.n}, d = {a.d}")
    print(f"  gammaface (Ray, {os.cpu_count()} CPUs) {ours['seconds']:7.1f} s, "
          f"+{ours['added_mb']:6.0f} MB | scikit-learn {ref['seconds']:7.1f} s, "
          f"+{ref['added_mb']:6.0f} MB | {ref['seconds'] / ours['seconds']:.2f}x faster, "
          f"memory ratio {ours['added_mb'] / max(ref['added_mb'], 1):.2f}")
    print(f"  chosen K: gammaface {min(bic_ours, key=bic_ours.get)}, scikit-learn "
          f"{min(bic_ref, key=bic_ref.get)}; largest relative BIC difference {worst:.1e}")
    print("  iterations per K (gammaface, scikit-learn): "
          + ", ".join(f"{k}: {o}/{r}" for k, (o, r) in iters.items()))


def machine() -> str:
    """The CPU, its core count and the BLAS libraries NumPy and torch run on: the products'
    speed depends on all three, so figures are only comparable on the same line."""
    import platform

    import torch
    from threadpoolctl import threadpool_info

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = sorted({f"{i['internal_api']} {i['version']}" for i in threadpool_info()
                   if i["user_api"] == "blas"})
    return (f"{model}, {os.cpu_count()} CPUs; NumPy BLAS: {', '.join(blas) or 'none found'}; "
            f"torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--k-max", type=int, default=11)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-fit", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    a = ap.parse_args()
    print(f"Machine: {machine()}")
    if not a.skip_fit:
        one_fit(a)
    if not a.skip_search:
        search(a)
    print(json.dumps({"n": a.n, "d": a.d, "k_max": a.k_max}))


if __name__ == "__main__":
    main()
