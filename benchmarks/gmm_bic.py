"""The full BIC search (K = 1..11) with the torch EM against scikit-learn's GaussianMixture(diag).

    python benchmarks/gmm_bic.py [--n 20000] [--d 3072] [--k-max 11] [--device cpu|cuda]

Both fit every K from the same start: k-means++ means on the same seed, with the weights and
variances of the rows nearest to each mean, computed once per K and given to both. Each backend runs in its own child process so that its peak memory (max RSS)
is its own. Prints wall time of each, their ratio, peak memory of each, and the largest relative
BIC difference over K.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np


def latent_like(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows that look like forward latents: a few clusters of smooth images plus unit noise."""
    rng = np.random.default_rng(seed)
    side = int(round((d / 3) ** 0.5))
    centres = rng.normal(0, 0.6, (6, 3, side // 4 + 1, side // 4 + 1))
    centres = centres.repeat(4, axis=2).repeat(4, axis=3)[:, :, :side, :side].reshape(6, -1)[:, :d]
    z = rng.choice(6, n, p=np.array([3, 2, 2, 1, 1, 1]) / 10)
    return (centres[z] + rng.standard_normal((n, d)) * 0.8).astype(np.float32)


def initial_parameters(X: np.ndarray, ks: list[int], seed: int) -> dict[int, dict[str, list]]:
    """Per K: k-means++ means, and weights and variances of the rows nearest to each mean."""
    from sklearn.cluster import kmeans_plusplus

    out = {}
    for k in ks:
        means, _ = kmeans_plusplus(X, k, random_state=seed)
        d2 = (X * X).sum(1)[:, None] - 2 * X @ means.T + (means * means).sum(1)[None, :]
        nearest = d2.argmin(1)
        weights = np.array([(nearest == j).mean() for j in range(k)]) + 1e-6
        variances = np.stack([X[nearest == j].var(0) if (nearest == j).sum() > 1 else X.var(0)
                              for j in range(k)]) + 1e-6
        out[k] = {"weights": (weights / weights.sum()).tolist(), "means": means.tolist(),
                  "variances": variances.tolist()}
    return out


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _child(backend: str, args: dict, queue: mp.Queue) -> None:
    starts = {int(k): {n: np.asarray(v) for n, v in p.items()}
              for k, p in json.loads(args["starts"]).items()}
    if backend == "sklearn":
        from sklearn.mixture import GaussianMixture as Sk
    else:
        import torch

        from gammaface.gmm import GaussianMixture
    X = latent_like(args["n"], args["d"])
    before = _status_mb("VmRSS")  # libraries and data loaded: what the fits add comes on top
    _reset_peak()
    start = time.perf_counter()
    bics = {}
    for k, p in starts.items():
        if backend == "sklearn":
            gm = Sk(k, covariance_type="diag", weights_init=p["weights"], means_init=p["means"],
                    precisions_init=1 / p["variances"], tol=1e-3, max_iter=100).fit(X)
        else:
            gm = GaussianMixture(k, backend="torch", device=args["device"], dtype=torch.float32,
                                 weights_init=p["weights"], means_init=p["means"],
                                 variances_init=p["variances"]).fit(X)
        bics[k] = float(gm.bic(X))
    seconds = time.perf_counter() - start
    peak_mb = _status_mb("VmHWM")
    queue.put({"seconds": seconds, "peak_mb": peak_mb, "added_mb": peak_mb - before, "bic": bics})


def run_backend(backend: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(backend, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--k-max", type=int, default=11)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    X = latent_like(a.n, a.d)
    ks = list(range(1, a.k_max + 1))
    starts = initial_parameters(X, ks, a.seed)
    del X
    args = {"n": a.n, "d": a.d, "device": a.device, "starts": json.dumps(starts)}
    data_mb = a.n * a.d * 4 / 2**20
    print(f"N = {a.n}, d = {a.d}, K = 1..{a.k_max}; data {data_mb:.0f} MB as float32")
    ours = run_backend("torch", args)
    ref = run_backend("sklearn", args)
    worst = max(abs(ours["bic"][k] - ref["bic"][k]) / abs(ref["bic"][k]) for k in ref["bic"])
    for name, r in ((f"torch ({a.device})", ours), ("scikit-learn", ref)):
        print(f"{name:<14} {r['seconds']:8.1f} s   peak RSS {r['peak_mb']:7.0f} MB   "
              f"added by the fits {r['added_mb']:7.0f} MB")
    print(f"speed-up {ref['seconds'] / ours['seconds']:.2f}x; memory added ratio "
          f"{ours['added_mb'] / max(ref['added_mb'], 1):.2f}; largest relative BIC difference "
          f"{worst:.2e}")
    k_ours = min(ours["bic"], key=ours["bic"].get)
    k_ref = min(ref["bic"], key=ref["bic"].get)
    print(f"chosen K: torch {k_ours}, scikit-learn {k_ref}")


if __name__ == "__main__":
    main()
