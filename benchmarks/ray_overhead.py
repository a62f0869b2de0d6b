"""The fixed costs a toy pipeline pays to Ray, each setting measured in a fresh process with its
own local Ray, both settings in the same run:

- default: `train_ddpm` and `train_classifiers` of the smoke config at toy size (10 DDPM steps,
  2 Ray Train workers), Ray Train's controller polling its workers every 2 s (Ray's default)
  and every 0.25 s (the test suite's);
- `--workers`: the smoke config's whole pipeline at toy size, with Ray's idle-worker settings
  (as many idle task workers kept as CPUs, the rest killed after 1 s) and the suite's (up to 8
  kept for 10 minutes, the preemption watcher off): wall time and the worker processes
  (task workers and actors) Ray started.

    .venv/bin/python benchmarks/ray_overhead.py [--workers] [--repeats 1]

At toy size nearly all of a stage's time is these fixed costs, which the test suite pays for
every pipeline it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "jobs" / "smoke.yaml"
TRAINING = ["train_ddpm", "train_classifiers"]
TOY = {"data.synthfaces.n": 200, "ddpm.preset": "tiny", "ddpm.resolution": 8,
       "ddpm.train_steps": 10, "ddpm.batch_size": 16, "ddpm.warmup_steps": 2,
       "ddpm.checkpoint_every": 10, "ddpm.sample_every": 0, "ddpm.sample_steps": 4,
       "ddpm.num_workers": 2, "classifiers.epochs": 4, "classifiers.image_size": 8,
       "classifiers.num_workers": 2}
BASE_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# the settings tests/conftest.py gives every Ray the suite starts
POLL_DEFAULT, POLL_SUITE = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0"}, {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}
WORKERS_DEFAULT = {**POLL_SUITE}
WORKERS_SUITE = {**POLL_SUITE, "RAY_num_workers_soft_limit": "8",
                 "RAY_idle_worker_killing_time_threshold_ms": "600000",
                 "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
RAY_KEYS = {k for env in (WORKERS_SUITE, POLL_DEFAULT) for k in env}

CHILD = """
import json, sys, time
from pathlib import Path
import ray
from gammaface import config
from gammaface.commands import pipeline
from gammaface.distributed.runtime import connect
cfg = config.load(sys.argv[1], json.loads(sys.argv[2]))
connect(cfg.ray)
pipeline.run(cfg, ["prepare"], echo=lambda s: None)
seconds = {}
for name in json.loads(sys.argv[3]):
    started = time.perf_counter()
    pipeline.run(cfg, [name], echo=lambda s: None)
    seconds[name] = time.perf_counter() - started
logs = Path(ray._private.worker._global_node.get_logs_dir_path())
seconds["workers started"] = len(list(logs.glob("worker-*.out")))
print(json.dumps(seconds))
"""


def measure(env: dict[str, str], work: Path, overrides: dict[str, object],
            stages: list[str]) -> dict[str, float]:
    """Seconds per stage, the worker processes Ray started and the run's wall time."""
    clean = {k: v for k, v in os.environ.items() if k not in RAY_KEYS}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(SMOKE),
                           json.dumps({**overrides, "workdir": str(work)}), json.dumps(stages)],
                          capture_output=True, text=True, env={**clean, **BASE_ENV, **env},
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", action="store_true",
                        help="the whole toy pipeline with Ray's and the suite's idle-worker settings")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.workers:
            from gammaface.commands.pipeline import STAGE_NAMES

            stages = [s for s in STAGE_NAMES if s != "prepare"]
            # the suite's toy settings (tests/test_jobs.py TOY) are the smoke config's own
            print(f"CPUs: {os.cpu_count()}; jobs/smoke.yaml end to end")
            for r in range(args.repeats):
                default = measure(WORKERS_DEFAULT, Path(tmp) / f"default{r}", {}, stages)
                ours = measure(WORKERS_SUITE, Path(tmp) / f"ours{r}", {}, stages)
                for key in ("wall", "workers started"):
                    print(f"{key}: {default[key]:.0f} with Ray's idle-worker settings, "
                          f"{ours[key]:.0f} with the suite's ({default[key] / ours[key]:.2f}x)")
            return
        print(f"CPUs: {os.cpu_count()}; {', '.join(TRAINING)} of jobs/smoke.yaml at toy size")
        for r in range(args.repeats):
            default = measure(POLL_DEFAULT, Path(tmp) / f"default{r}", TOY, TRAINING)
            ours = measure(POLL_SUITE, Path(tmp) / f"ours{r}", TOY, TRAINING)
            for name in TRAINING:
                print(f"{name}: {default[name]:.1f} s polling every 2 s, {ours[name]:.1f} s every "
                      f"0.25 s ({default[name] / ours[name]:.2f}x)")


if __name__ == "__main__":
    main()
