"""The fixed cost of a short training stage: the smoke config's `train_ddpm` and
`train_classifiers` at toy size (10 DDPM steps, 2 Ray Train workers), each in a fresh process
with its own local Ray, with Ray Train's controller polling its workers every 2 s (Ray's
default) and every 0.25 s (gammaface's), in the same run.

    .venv/bin/python benchmarks/ray_overhead.py [--repeats 1]

Prints seconds per stage and the ratio of the two settings. At toy size nearly all of a stage's
time is this fixed cost, which is what the test suite pays for every training stage it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ["train_ddpm", "train_classifiers"]
TOY = {"data.synthfaces.n": 200, "ddpm.preset": "tiny", "ddpm.resolution": 8,
       "ddpm.train_steps": 10, "ddpm.batch_size": 16, "ddpm.warmup_steps": 2,
       "ddpm.checkpoint_every": 10, "ddpm.sample_every": 0, "ddpm.sample_steps": 4,
       "ddpm.num_workers": 2, "classifiers.epochs": 4, "classifiers.image_size": 8,
       "classifiers.num_workers": 2}

CHILD = """
import json, sys, time
from gammaface import config, pipeline
from gammaface.ray_runtime import connect
cfg = config.load(sys.argv[1], json.loads(sys.argv[2]))
connect(cfg.ray)
pipeline.run(cfg, ["prepare"], echo=lambda s: None)
seconds = {}
for name in json.loads(sys.argv[3]):
    started = time.perf_counter()
    pipeline.run(cfg, [name], echo=lambda s: None)
    seconds[name] = time.perf_counter() - started
print(json.dumps(seconds))
"""


def measure(interval: str, work: Path) -> dict[str, float]:
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": interval,
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    overrides = {**TOY, "workdir": str(work)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "jobs" / "smoke.yaml"),
                           json.dumps(overrides), json.dumps(STAGES)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"CPUs: {os.cpu_count()}; {', '.join(STAGES)} of jobs/smoke.yaml at toy size")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            default = measure("2.0", Path(tmp) / f"default{r}")
            ours = measure("0.25", Path(tmp) / f"ours{r}")
            for name in STAGES:
                print(f"{name}: {default[name]:.1f} s polling every 2 s, {ours[name]:.1f} s every "
                      f"0.25 s ({default[name] / ours[name]:.2f}x)")


if __name__ == "__main__":
    main()
