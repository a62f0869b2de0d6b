"""Bootstrap metric speed: the vectorised functions against a plain per-repetition loop.

    python benchmarks/metrics_bootstrap.py [--n 10000] [--repeat 500]

Prints seconds for each bootstrap and the time of `fairness.bootstrap` (one repetition at a
time) divided by ours (higher is better).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gammaface.metrics import fairness as F


def _four_kl(s, yt, g):
    return F.kl_directional(s, yt, g, 1) + F.kl_directional(s, yt, g, 0)


def _time(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.n
    yt = rng.integers(0, 2, n)
    yp = np.where(rng.random(n) < 0.85, yt, 1 - yt)
    g = rng.integers(0, 2, n)
    s = np.clip(0.6 * yp + 0.4 * rng.random(n), 0, 1)
    cases = [
        ("ba_bootstrap", lambda: F.ba_bootstrap(yt, yp, g, seed=0, repeat=args.repeat),
         lambda: F.bootstrap(F.ba_a_to_t, (yt, yp, g), 0, args.repeat)),
        ("deo_bootstrap", lambda: F.deo_bootstrap(yt, yp, g, seed=0, repeat=args.repeat),
         lambda: F.bootstrap(F.deo, (yt, yp, g), 0, args.repeat)),
        ("kl_bootstrap", lambda: F.kl_bootstrap(s, yt, g, seed=0, repeat=args.repeat),
         lambda: F.bootstrap(_four_kl, (s, yt, g), 0, args.repeat)),
    ]
    print(f"n = {n}, repeat = {args.repeat}")
    print(f"{'function':<15} {'ours s':>8} {'loop s':>8} {'loop/ours':>10}  same result")
    for name, ours, loop in cases:
        t_ours, r_ours = _time(ours)
        t_loop, r_loop = _time(loop)
        same = np.allclose(r_ours, r_loop, equal_nan=True)
        print(f"{name:<15} {t_ours:8.3f} {t_loop:8.3f} {t_loop / t_ours:10.1f}  {same}")


if __name__ == "__main__":
    main()
