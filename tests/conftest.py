import os
from pathlib import Path

import pytest

from tests.deploy.servers import free_port, s3_env, s3_server
from tests.upstream import SMOKE, SMOKE_K, SMOKE_UPSTREAM

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s, and a run's start, its checkpoints and
# its end each wait for a poll: about 7 s of every toy training stage (benchmarks/
# ray_overhead.py). The suite polls every 0.25 s, in this process and every one it starts;
# the pipeline keeps Ray's default, whose polls cost long runs nothing.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# A local Ray keeps as many idle task workers as it has CPUs and kills the rest after a second;
# the next stage's tasks then start new workers that import torch, diffusers and MLflow again
# (4 to 9 s of CPU each). The suite keeps up to 8 idle workers for ten minutes: the smoke
# pipeline then starts 26 worker processes, not 38, and takes 164 s, not 177 (benchmarks/
# ray_overhead.py --workers). Ray reads its system settings from RAY_<name> in every head this
# process or its children start.
os.environ.setdefault("RAY_num_workers_soft_limit", "8")
os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "600000")
# Ray Train watches for preempted nodes with an actor of its own per run (a process importing
# Ray Train, about 2 s of CPU); nothing preempts a test's nodes
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)
# the exported dataset is loaded from disk; nothing may reach for the Hugging Face hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

OBJECT_STORE_BYTES = 150 * 1024 * 1024
# The session's S3 server (started by the `s3` fixture when a test asks for it) listens here.
# Ray's workers are given its address when the session's Ray starts, as a cluster's pods are
# given their object store's: a pipeline on an s3:// workdir then runs in this process, whose
# Ray Train workers write checkpoints to the bucket; elsewhere the address is never used.
S3_PORT = free_port()


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session, with a capped object store."""
    import ray

    if not ray.is_initialized():
        from gammaface.distributed.runtime import local_state_api

        head = local_state_api()
        head["runtime_env"]["env_vars"].update(s3_env(S3_PORT))
        ray.init(address="local", num_cpus=2, object_store_memory=OBJECT_STORE_BYTES,
                 configure_logging=False, **head)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server on loopback for the session (a module that uses it puts its
    `env` in this process's environment, where pyarrow's S3 filesystem reads the endpoint)."""
    with s3_server(tmp_path_factory.mktemp("s3"), S3_PORT) as server:
        yield server


@pytest.fixture(scope="session")
def smoke_upstream(tmp_path_factory, ray_local) -> Path:
    """The smoke pipeline's workdir up to gmm_search (K forced to SMOKE_K), built once for the
    whole session: the stage tests of generate, the mixture search and DDPM training start from
    it. Never written to: a test that runs stages copies it first (`copy_workdir`)."""
    from gammaface import config
    from gammaface.commands import pipeline

    work = tmp_path_factory.mktemp("smoke-upstream") / "work"
    pipeline.run(config.load(SMOKE, {"workdir": str(work), "gmm.k": SMOKE_K}), SMOKE_UPSTREAM,
                 echo=lambda s: None)
    return work


# a test that asks for one of these starts Ray, a pipeline or a server: `make check` leaves it to
# `make test` (marked `pipeline`), as it does the `e2e` runs
PIPELINE_FIXTURES = {"ray_local", "smoke_upstream", "s3"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pipeline)
