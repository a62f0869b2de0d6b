"""Joining a Ray cluster, or starting a local one: the only place that calls `ray.init`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from gammaface.distributed.train import node_cpus

if TYPE_CHECKING:  # the settings' types only: Ray's plumbing sits below the config
    from gammaface.config import Config, RayConfig

log = logging.getLogger(__name__)


def local_state_api() -> dict[str, Any]:
    """`ray.init` arguments that give a local head a state API its workers can reach.

    Ray Train's placement-group cleaner polls the state API while a run lasts; without a
    dashboard (or when the API server cannot be found from the bootstrap address, as on a
    host whose node address is not loopback) each poll retries for 40 s and every `fit` then
    waits about 14 s for the cleaner to stop. A dashboard on a free loopback port, named to
    the workers through RAY_API_SERVER_ADDRESS in the job's runtime environment only (never
    this process's: `submit` reads that variable), answers in milliseconds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
            "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}


def connect(cfg: RayConfig) -> None:
    """Join `cfg.address` or RAY_ADDRESS when given, else start a local Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        # only for the head this process starts for itself: a token left by an earlier local
        # head would otherwise switch authentication on; a cluster keeps its own setting
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # ray.init replaces the SIGTERM handler with one that exits at once; keep the caller's
    # (the command line's ends the MLflow runs as KILLED and frees the workdir first)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if address:
        log.info("joining Ray at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        # address="local": a new Ray of our own, never a head some other process left running
        ray.init(address="local", num_cpus=cfg.num_cpus,
                 object_store_memory=cfg.object_store_memory, log_to_driver=True,
                 configure_logging=False, **local_state_api())
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    # locally and on a cluster alike: the stages show their own progress (gammaface.common.progress),
    # and Ray Data's carriage-return bars would garble a pod log
    ray.data.DataContext.get_current().enable_progress_bars = False
    if address:
        return
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


def placement(cfg: Config, stage: str) -> dict[str, Any]:
    """Ray Data's `map_batches` arguments that place a stage's actors (`ray.resources`): none
    where the stage may run anywhere."""
    wanted = cfg.ray.placed(stage)
    return {"resources": wanted} if wanted else {}


def actor_resources(concurrency: int, num_gpus: float,
                    nodes: list[float] | None = None) -> tuple[float, int]:
    """(CPUs per actor, torch threads per actor) for a pool of `concurrency` actors.

    Threads come from the CPUs an actor can share on its node: the cluster's CPUs spread over
    the pool, but never more than the largest node holds (an actor runs on one node). On CPU
    one CPU stays free for Ray Data's own tasks: on a small machine a pool that holds every CPU
    can starve the read tasks and hang (ray#44687). `nodes`: CPUs per node, else the
    cluster's."""
    nodes = nodes or node_cpus()
    total, largest = sum(nodes), max(nodes)
    threads = max(1, int(min(largest, total // concurrency)))
    if num_gpus > 0:
        return 1.0, threads
    return min(1.0, max(0.1, (total - 1) / concurrency)), threads
