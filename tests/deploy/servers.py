"""Real servers for the deployment tests: a Ray head with its job server, an MLflow server.
Each runs in its own process group and is stopped by killing that group, so nothing else on
the machine (such as the test session's own local Ray) is touched."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: every socket is held open until all are bound, since a port
    given back by one bind can be handed out again by the next (Ray refuses two of its
    listeners on one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path,
              headers: dict[str, str] | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# `ray start --block` stops its node on Ctrl-C (SIGINT) in about 2 s; SIGTERM it leaves
# unanswered, so a test waited out _stop's 20 s for every node it started
RAY_STOP = signal.SIGINT


def env_with_venv() -> dict[str, str]:
    """This interpreter's bin folder first on PATH, so that `python` in a job is this one."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class Head:
    url: str  # the dashboard and job server
    gcs: str  # host:port that `ray start --address` and `ray.init(address=...)` join


def _own_ports(*names: str, extra: int = 0) -> tuple[list[str], list[int]]:
    """A free port for each of Ray's per-node listeners (the test session's local Ray, and any
    other node on this machine, holds the defaults), and `extra` more distinct ones."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", *names)
    ports = free_ports(len(names) + extra)
    return [f"--{name}={p}" for name, p in zip(names, ports)], ports[len(names):]


def _port_race(log: Path) -> bool:
    """Whether a start failed only because another process took a chosen port meanwhile, or
    Ray's fixed 30 s raylet wait ran out on a loaded machine: worth one more try."""
    text = log.read_text()
    return "timed out during startup" in text or "used by other components" in text \
        or "address already in use" in text.lower()


@contextlib.contextmanager
def ray_head(tmp: Path, env: dict[str, str] | None = None, num_cpus: int = 2) -> Iterator[Head]:
    """`ray start --head` with the dashboard; yields its job server's URL and GCS address.
    `env` adds to the head's environment (RAY_AUTH_MODE=token and a token, say)."""
    log = tmp / "ray-head.log"
    ray = str(Path(sys.executable).parent / "ray")
    for attempt in range(2):
        own, (port, dash) = _own_ports("ray-client-server-port", extra=2)
        proc = subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", "--include-dashboard=true", f"--num-cpus={num_cpus}",
             *own, "--min-worker-port=20000",
             "--max-worker-port=20999",
             "--object-store-memory=200000000", "--disable-usage-stats", "--block"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env={**env_with_venv(), **(env or {})},
            start_new_session=True)
        url = f"http://127.0.0.1:{dash}"
        try:
            token = (env or {}).get("RAY_AUTH_TOKEN")
            wait_http(f"{url}/api/version", proc, 300, log,
                      {"Authorization": f"Bearer {token}"} if token else None)
            break
        except RuntimeError:
            _stop(proc, RAY_STOP)
            if attempt or not _port_race(log):
                raise
    try:
        yield Head(url, f"127.0.0.1:{port}")
    finally:
        _stop(proc, RAY_STOP)


def alive_nodes(head: Head) -> list:
    """The cluster's alive nodes, as Ray's state API lists them (NodeState records)."""
    from ray.util.state import list_nodes

    return list_nodes(address=head.url, filters=[("state", "=", "ALIVE")], detail=True)


@contextlib.contextmanager
def ray_node(tmp: Path, head: Head, resources: dict[str, float], num_cpus: int = 2) -> Iterator[str]:
    """A second Ray node on this machine (its own `ray start` process, its own ports) joined
    to `head`, offering `resources`; yields its node id once the head lists it alive."""
    log = tmp / "ray-node.log"
    ray = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray, "start", f"--address={head.gcs}", f"--num-cpus={num_cpus}",
         f"--resources={json.dumps(resources)}", *_own_ports("node-manager-port", "object-manager-port")[0],
         "--min-worker-port=21000", "--max-worker-port=21999", "--object-store-memory=200000000",
         "--disable-usage-stats", "--block"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env_with_venv(), start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the second Ray node exited early:\n{log.read_text()[-3000:]}")
            # the node that offers the custom resources is this one
            new = [n for n in alive_nodes(head)
                   if set(resources) <= set(n.resources_total or {})]
            if new:
                break
            if time.time() > deadline:
                raise RuntimeError(f"the second Ray node did not join in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield new[0].node_id
    finally:
        _stop(proc, RAY_STOP)


@contextlib.contextmanager
def mlflow_server(tmp: Path) -> Iterator[str]:
    """`mlflow server` on loopback with a SQLite backend and proxied local artifacts."""
    port = free_port()
    log = tmp / "mlflow-server.log"
    mlflow = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}", "--serve-artifacts",
         "--artifacts-destination", str(tmp / "server-artifacts"), "--workers", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env_with_venv(),
        start_new_session=True, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, 300, log)  # slow to start on a loaded machine
        yield url
    finally:
        _stop(proc)


@dataclass(frozen=True)
class S3:
    endpoint: str
    env: dict[str, str]  # what a process needs to reach it: endpoint and throwaway keys

    def bucket(self, name: str) -> str:
        """Create bucket `name`; returns its s3:// URI."""
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket=name)
        return f"s3://{name}"


def s3_env(port: int) -> dict[str, str]:
    """What a process needs to reach an S3 server on this loopback port: endpoint and throwaway
    keys (known before the server starts, so a Ray started earlier can hand it to its workers)."""
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def s3_server(tmp: Path, port: int | None = None) -> Iterator[S3]:
    """An S3-compatible server (moto in server mode) on loopback, in its own process group."""
    port = port or free_port()
    log = tmp / "s3-server.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=tmp)
    env = s3_env(port)
    try:
        wait_http(f"{env['AWS_ENDPOINT_URL']}/moto-api/", proc, 60, log)
        yield S3(env["AWS_ENDPOINT_URL"], env)
    finally:
        _stop(proc)
