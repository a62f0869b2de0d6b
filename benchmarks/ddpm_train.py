"""DDPM throughput on this machine.

    python benchmarks/ddpm_train.py [--preset small] [--resolution 16] [--steps 60]
                                    [--batch 32] [--sample-batch 64] [--sample-steps 50]
                                    [--device cpu|cuda] [--workers 1,2]

1. Training images/s of the preset through Ray Train's TorchTrainer with 1 and 2 workers (DDP
   over gloo on CPU), measured by the loop over its last logging interval.
2. Sampling images/s of `gammaface.diffusion.sampler.reverse` against diffusers' own
   DDIMPipeline on the same UNet, steps and batch; the ratio ours/theirs (1 or more means
   ours is no slower).

With `--device cuda` both run on the GPU: training through Ray Train with one GPU per worker
(the loop trains in bf16 autocast on CUDA), sampling with the UNet and the noise on the GPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel

from gammaface import config
from gammaface.data import synthfaces
from gammaface.diffusion.presets import unet_config
from gammaface.diffusion.sampler import make_scheduler, reverse
from gammaface.distributed import train as ray_train
from gammaface.diffusion.train_loop import loop_config, train_loop_per_worker


def train_throughput(args: argparse.Namespace, workers: int, data_dir: Path, paths: list[str]) -> float:
    gpu = args.device == "cuda"
    cfg = config.from_dict({"ddpm": {"preset": args.preset, "resolution": args.resolution,
                                     "train_steps": args.steps, "batch_size": args.batch,
                                     "num_workers": workers, "checkpoint_every": args.steps,
                                     "sample_every": 0, "log_every": args.steps // 2,
                                     "max_failures": 0, "use_gpu": gpu}})
    threads = max(1, (os.cpu_count() or 1) // workers)
    loop = loop_config(cfg.ddpm, unet_config(args.preset, args.resolution), cfg.seed,
                       f"bench{workers}", str(data_dir), threads)
    with tempfile.TemporaryDirectory() as storage:
        _, metrics = ray_train.fit(train_loop_per_worker, loop, num_workers=workers, use_gpu=gpu,
                                   cpus_per_worker=threads, storage_path=storage,
                                   name=f"bench-{workers}", max_failures=0, what="ddpm",
                                   table=pd.DataFrame({"path": paths}))
    return float(metrics["images_per_s"])


def sampling(args: argparse.Namespace) -> tuple[float, float]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    unet = UNet2DModel(**unet_config(args.preset, args.resolution)).eval().to(device)
    train_sched = DDPMScheduler(num_train_timesteps=1000)
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(train_sched.config))
    pipe.set_progress_bar_config(disable=True)
    ours_sched = make_scheduler(train_sched, "ddim")
    size = args.resolution
    n = args.sample_batch

    def theirs() -> None:
        # output_type "np" copies to the host, which waits for the GPU: the timing is complete
        pipe(batch_size=n, generator=torch.Generator(device).manual_seed(0), eta=0.0,
             num_inference_steps=args.sample_steps, output_type="np")

    def ours() -> None:
        x = torch.randn((n, 3, size, size), generator=torch.Generator(device).manual_seed(0),
                        device=device)
        out = reverse(unet, ours_sched, x, 1000, 0, args.sample_steps)
        ((out / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).cpu().numpy()

    timings = {}
    for name, fn in (("theirs", theirs), ("ours", ours)):
        fn()  # warm-up
        best = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            best.append(time.perf_counter() - start)
        timings[name] = n / min(best)
    return timings["ours"], timings["theirs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--workers", default="1,2", help="training worker counts to time, comma-separated")
    args = ap.parse_args()
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"preset {args.preset} at {args.resolution} px, {torch.get_num_threads()} torch threads, "
          f"{where}")
    ours, theirs = sampling(args)
    print(f"sampling, batch {args.sample_batch}, {args.sample_steps} DDIM steps: "
          f"reverse {ours:.1f} img/s, DDIMPipeline {theirs:.1f} img/s, ratio {ours / theirs:.2f}")
    if args.skip_train:
        return
    from gammaface.config import RayConfig
    from gammaface.distributed.runtime import connect

    connect(RayConfig(num_cpus=os.cpu_count()))
    with tempfile.TemporaryDirectory() as d:
        data = Path(d)
        df = synthfaces.build(data, n=512, size=args.resolution, seed=0, train=1.0, val=0.0,
                              use_ray=False)
        paths = list(df["path"])
        counts = [int(w) for w in args.workers.split(",")]
        results = {w: train_throughput(args, w, data, paths) for w in counts}
    precision = "bf16 autocast" if args.device == "cuda" else "float32"
    for w, ips in results.items():
        print(f"training ({precision}), global batch {args.batch}, {w} worker(s): {ips:.1f} img/s "
              f"({ips / args.batch:.2f} steps/s)")
    if len(counts) > 1:
        print(f"{counts[-1]} workers / {counts[0]} worker: {results[counts[-1]] / results[counts[0]]:.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
