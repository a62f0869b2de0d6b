"""`gammaface submit`: run `gammaface run CONFIG` as a Ray job on a cluster through Ray's Job
Submission SDK, stream its logs, and exit with its outcome.

Two ways to bring the code: the working directory is uploaded with the job (default; the
cluster's image provides the dependencies), or `--installed` uses the package installed in the
cluster's image (the config path is then a path inside the image). The MLflow tracking URI and
the workdir travel in the job's runtime environment and command line.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable

from gammaface.common.errors import UserError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 120.0
# what never travels with an uploaded working directory
# (gitignore patterns, as Ray reads them: a leading / anchors a pattern to the tree's root)
EXCLUDES = [".git", ".venv*", "venv", "runs", "mlruns", "mlartifacts", "*.db",
            "__pycache__", ".pytest_cache", ".hypothesis", "benchmarks/out", "*.egg-info",
            # datasets travel through the workdir's storage, never with the code (the package's
            # own gammaface/data is code, so only the checkout's top-level data/ is left)
            "/data",
            # secrets and credentials never leave this machine, wherever they lie in the tree
            ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
            "id_rsa*", "id_ecdsa*", "id_ed25519*", "id_dsa*", ".ssh", ".aws", ".azure", ".gcloud",
            "gcloud", ".kube", "kubeconfig*", ".docker", ".netrc", ".pgpass", ".git-credentials",
            "credentials*.json", "*service-account*.json", "*.token", "token", ".htpasswd",
            ".mlflow", ".pypirc", ".npmrc", ".s3cfg", ".boto", ".databrickscfg", ".vault-token",
            "kaggle.json", "rclone.conf", "secrets.yaml", "secrets.yml", "*.tfvars",
            "*.tfstate", ".terraformrc", ".*history"]


def job_server(address: str) -> str:
    """The job server's URL: `HOST:PORT` as given on a command line is taken as http (Ray would
    otherwise read it as a cluster's GCS address and try to join it for most of a minute)."""
    address = address.strip()
    if "://" in address:
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address!r} is neither a URL (http://HEAD:8265) nor HOST:PORT.")
    return f"http://{address}"


def client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        # Ray's own message names every place a token may come from; ours names the one to use
        refused = "refuses this token" if "invalid" in str(exc).lower() else "requires a token"
        raise UserError(f"the Ray cluster at {address} {refused}: set RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN to the cluster's token (on Kubernetes the auth_token of "
                        "the Secret gammaface-ray-auth).") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"no Ray job server answers at {address} "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).") from None


def entrypoint(config: str, stages: str | None, workdir: str | None, sets: list[str]) -> str:
    args = ["python", "-m", "gammaface", "run", config]
    if stages:
        args += ["--stages", stages]
    if workdir:
        args += ["--workdir", workdir]
    for s in sets:
        args += ["--set", s]
    return shlex.join(args)


def runtime_env(working_dir: str | None, tracking_uri: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}
    if tracking_uri:
        env["env_vars"]["MLFLOW_TRACKING_URI"] = tracking_uri
    if working_dir:
        root = Path(working_dir)
        if not (root / "gammaface" / "__init__.py").is_file():
            raise UserError(f"--working-dir {working_dir} is not a gammaface checkout (no "
                            "gammaface/__init__.py); pass the repository root or use --installed.")
        env["working_dir"] = str(root.resolve())
        env["excludes"] = EXCLUDES + [f"/{rel}" for rel in links_out_of(root.resolve())]
    return env


def links_out_of(root: Path) -> list[str]:
    """Every symbolic link under `root` (outside the folders EXCLUDES leaves behind by name)
    that points outside it, relative to it: Ray zips a link as its target's content, so a link
    to ~/.aws would upload the credentials themselves."""
    names = [p for p in EXCLUDES if "/" not in p]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in names)]
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                out.append(path.relative_to(root).as_posix())
    return sorted(out)


def check_config_path(config: str, working_dir: str) -> None:
    """The job runs `config` from the uploaded copy of `working_dir`, so it must be a file in
    that folder named relative to it (an absolute path names this machine's file)."""
    root = Path(working_dir).resolve()
    inside = (root / config).resolve()
    if Path(config).is_absolute() or not inside.is_relative_to(root) or not inside.is_file():
        raise UserError(f"config {config} is not a file inside the working directory "
                        f"{working_dir}; name it relative to that folder (e.g. jobs/demo.yaml), "
                        "as the job on the cluster sees it.")


def submit(address: str, config: str, *, stages: str | None = None, workdir: str | None = None,
           sets: list[str] | None = None, tracking_uri: str | None = None,
           working_dir: str | None = ".") -> str:
    if working_dir:
        check_config_path(config, working_dir)
    c = client(address)
    deadline = time.time() + AGENT_WAIT_S
    while True:
        try:
            return c.submit_job(entrypoint=entrypoint(config, stages, workdir, sets or []),
                                runtime_env=runtime_env(working_dir, tracking_uri),
                                metadata={"gammaface.config": config})
        except RuntimeError as exc:
            # a head that has just started answers before its job agent is up
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2.0)


def follow(address: str, job_id: str, echo: Callable[[str], None] = print,
           poll_s: float = 1.0, timeout_s: float | None = None) -> str:
    """Stream the job's logs as Ray's job server pushes them (`tail_job_logs`) until the job
    ends; returns its final status. A stream that ends before the job does (the server closed
    it) is followed by polling the status, so the outcome is always the job's last word."""
    import asyncio

    c = client(address)

    async def stream() -> None:
        async for chunk in c.tail_job_logs(job_id):
            if chunk.strip():
                echo(chunk.rstrip("\n"))

    start = time.time()
    try:
        asyncio.run(asyncio.wait_for(stream(), timeout_s))
    except asyncio.TimeoutError:
        raise TimeoutError(f"job {job_id} still {c.get_job_status(job_id).value} after "
                           f"{timeout_s:.0f} s.") from None
    while True:
        status = str(c.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.time() - start > timeout_s:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f} s.")
        time.sleep(poll_s)


def status(address: str, job_id: str) -> str:
    try:
        info = client(address).get_job_info(job_id)
    except RuntimeError:
        raise UserError(f"the Ray cluster at {address} has no job {job_id}.") from None
    return f"{job_id}: {info.status}" + (f" ({info.message})" if info.message else "")


def stop(address: str, job_id: str) -> bool:
    try:
        return bool(client(address).stop_job(job_id))
    except RuntimeError:
        raise UserError(f"the Ray cluster at {address} has no job {job_id}.") from None
