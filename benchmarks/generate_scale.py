"""The generate stage at scale on this machine's CPUs: 10,000 then 100,000 images of one method.

    python benchmarks/generate_scale.py [--sizes 10000,100000] [--method gmm|quota_adaptive|...]
                                        [--workdir /tmp/gammaface-genscale]

With a quota method (`quota_adaptive`, `quota_mixture`, `quota_unconditional`) the upstream also
trains a tiny labeller, the set is kept over the 4 age x gender cells, and each size also prints
renders per kept image and kept images per second.

A tiny pipeline (SynthFaces 8 px, the `tiny` UNet trained a few steps, forward harvest, K by
BIC) is built once; then each size runs the real `generate` stage in its own child process, so
that the driver's peak memory (VmHWM) is its own. For the largest size, the last 10 % of the
shards are then deleted and the stage rerun, which times a resume from 90 %. Prints images/s,
the driver's peak memory, size on disk, and the resume time; the peer of each size is the
other size (the driver's memory must not grow with n).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

BASE = {
    "name": "genscale", "seed": 0,
    "ray": {"num_cpus": 2, "object_store_memory": 300_000_000},
    "mlflow": {"experiment": "genscale"},
    "data": {"dataset": "synthfaces", "synthfaces": {"n": 400, "size": 16}},
    "ddpm": {"preset": "tiny", "train_steps": 50, "batch_size": 32, "checkpoint_every": 50,
             "sample_every": 0, "sample_steps": 5, "log_every": 25, "max_failures": 0},
    "harvest": {"n": 400, "t_star": 200, "steps": 10, "batch_size": 100},
    "gmm": {"k_min": 1, "k_max": 4},
    "classifiers": {"backbone": "resnet18", "epochs": 2, "batch_size": 64, "num_workers": 1,
                    "learning_rate": 0.001, "max_failures": 0},
    "generate": {"methods": ["gmm"], "steps": 10, "shard_size": 1000, "batch_size": 500,
                 "quota": {"cells": ["age", "gender"], "budget": 20}},
    "downstream": {"methods": ["baseline"]},  # the benchmark makes one set and trains nothing on it
}
UPSTREAM = ["prepare", "train_ddpm", "harvest", "gmm_search"]


def _cfg(workdir: Path, n: int, method: str):
    from gammaface import config

    data = json.loads(json.dumps(BASE))
    data["workdir"] = str(workdir)
    data["generate"]["n"] = n
    data["generate"]["methods"] = [method]
    return config.from_dict(data)


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _generate(workdir: str, n: int, method: str, queue: mp.Queue) -> None:
    from gammaface.commands import pipeline

    cfg = _cfg(Path(workdir), n, method)
    start = time.perf_counter()
    result = pipeline.run(cfg, ["generate"], echo=lambda s: None)[0]
    queue.put({"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(),
               "rendered_per_s": result.metrics.get("images_per_s", float("nan"))})


def _in_child(workdir: Path, n: int, method: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_generate, args=(str(workdir), n, method, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def _disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--method", default="gmm")
    parser.add_argument("--workdir", default="/tmp/gammaface-genscale")
    args = parser.parse_args()
    method = args.method
    quota = method.startswith("quota_")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(args.workdir)
    shutil.rmtree(base, ignore_errors=True)
    from gammaface.commands import pipeline

    t = time.perf_counter()
    upstream = UPSTREAM + (["train_classifiers"] if quota else [])
    pipeline.run(_cfg(base / "upstream", sizes[0], method), upstream, echo=lambda s: None)
    print(f"upstream (prepare, tiny DDPM, harvest, BIC search) built in {time.perf_counter() - t:.0f} s")
    rows = []
    for n in sizes:
        work = base / f"n{n}"
        shutil.copytree(base / "upstream", work)
        r = _in_child(work, n, method)
        r.update(n=n, disk_mb=_disk_mb(work / "generated"))
        rows.append(r)
        extra = ""
        if quota:
            q = json.loads((work / "generated" / method / "quota.json").read_text())
            extra = (f"; quota: kept {q['kept']}/{q['target']}, {q['renders_per_kept']:.2f} renders "
                     f"per kept image, {q['kept'] / r['seconds']:.0f} kept images/s, "
                     f"{len(q['rounds'])} rounds")
        print(f"n = {n:>7}: {r['seconds']:7.1f} s in the stage, {n / r['seconds']:6.0f} images/s "
              f"end to end ({r['rendered_per_s']:.0f}/s rendering), driver peak "
              f"{r['peak_mb']:.0f} MB, {r['disk_mb']:.0f} MB on disk "
              f"({r['disk_mb'] * 2**20 / n:.0f} bytes/image){extra}", flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"driver peak memory {b['n']} vs {a['n']}: x{b['peak_mb'] / a['peak_mb']:.2f} "
              f"for x{b['n'] / a['n']:.0f} the images")
    big = base / f"n{sizes[-1]}"
    shard_dirs = sorted((big / "generated" / method).glob("shard-*"))
    for d in shard_dirs[int(len(shard_dirs) * 0.9):]:
        shutil.rmtree(d)
    (big / "generated" / "stage.json").unlink()
    r = _in_child(big, sizes[-1], method)
    print(f"resume from 90 % of {sizes[-1]}: {r['seconds']:.1f} s "
          f"(a full run took {rows[-1]['seconds']:.1f} s), driver peak {r['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
