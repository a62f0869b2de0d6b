"""Job submission to a real Ray head, and a pipeline tracked into a real MLflow server."""

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from gammaface import config
from gammaface.commands import pipeline
from tests import mlflow_helpers
from tests.deploy.servers import env_with_venv, mlflow_server, ray_head
from tests.deploy.manifests import REPO

pytestmark = pytest.mark.pipeline  # every test here starts a Ray head or an MLflow server


def _gammaface(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "gammaface", *args], capture_output=True,
                          text=True, cwd=REPO, env=env or env_with_venv(), **kw)


def test_submit_runs_smoke_on_a_real_head_and_logs_to_mlflow(tmp_path):
    work = tmp_path / "work"
    with ray_head(tmp_path) as head:
        url = head.url
        done = _gammaface("submit", "jobs/smoke.yaml", "--address", url,
                          "--stages", "prepare,train_ddpm", "--workdir", str(work),
                          "--set", "ddpm.train_steps=10", timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "[train_ddpm] done" in done.stdout and "SUCCEEDED" in done.stdout
        job_id = done.stdout.split("submitted ", 1)[1].split()[0]
        status = _gammaface("submit", "--status", job_id, "--address", url)
        assert status.returncode == 0 and "SUCCEEDED" in status.stdout
        missing = _gammaface("submit", "--stop", "raysubmit_nosuchjob", "--address", url)
        assert missing.returncode == 2 and "has no job raysubmit_nosuchjob" in missing.stderr

        # follow streams a job's lines as the job server pushes them and ends with its outcome
        from gammaface.commands import submit

        script = "import time; print('first line', flush=True); time.sleep(2); print('second line'); raise SystemExit(3)"
        job = submit.client(url).submit_job(entrypoint=f'{sys.executable} -c "{script}"')
        lines = []
        assert submit.follow(url, job, echo=lines.append, timeout_s=120) == "FAILED"
        text = "\n".join(lines)
        assert text.index("first line") < text.index("second line")
        # what the upload leaves behind: tests/deploy/test_upload.py, with Ray's own zipping
    runs = mlflow_helpers.runs(work, "gammaface-smoke")
    assert {r.data.tags.get("stage") for r in runs} >= {"prepare", "train_ddpm"}
    assert (work / "ddpm" / "stage.json").is_file()


def test_a_head_with_token_authentication_takes_only_its_token(tmp_path):
    """As on Kubernetes (authOptions: token): without the token, or with another, submit says
    so in one sentence; with it, a pipeline stage runs on the cluster, whose driver joins Ray
    under the cluster's own auth setting."""
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t" * 32}
    with ray_head(tmp_path, env=token) as head:
        url = head.url
        for env, said in (({}, "requires a token"), ({**token, "RAY_AUTH_TOKEN": "x" * 32}, "refuses this token")):
            done = _gammaface("submit", "--status", "raysubmit_none", "--address", url, env={**env_with_venv(), **env})
            assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
            assert "RAY_AUTH_TOKEN" in done.stderr
        work = tmp_path / "work"
        done = _gammaface("submit", "jobs/smoke.yaml", "--address", url, "--stages", "prepare",
                          "--workdir", str(work), env={**env_with_venv(), **token}, timeout=600)
        assert done.returncode == 0 and "SUCCEEDED" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert (work / "data" / "synthfaces" / "stage.json").is_file()


def test_submit_takes_host_port_as_http_and_names_a_server_that_does_not_answer():
    started = time.monotonic()
    done = _gammaface("submit", "--status", "raysubmit_x", "--address", "127.0.0.1:9", timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "no Ray job server answers at http://127.0.0.1:9" in done.stderr
    assert time.monotonic() - started < 30  # not Ray's wait to join a cluster at that address
    bad = _gammaface("submit", "--status", "raysubmit_x", "--address", "head")
    assert bad.returncode == 2 and "neither a URL (http://HEAD:8265) nor HOST:PORT" in bad.stderr


def test_submit_refuses_a_bad_config_before_anything_reaches_the_cluster():
    bad = _gammaface("submit", "jobs/smoke.yaml", "--address", "http://127.0.0.1:9",
                     "--set", "harvest.t_star=-3")
    assert bad.returncode == 2 and "harvest.t_star" in bad.stderr and "Traceback" not in bad.stderr


def test_a_pipeline_tracks_into_a_real_mlflow_server(tmp_path, ray_local):
    with mlflow_server(tmp_path) as url:
        cfg = config.load(REPO / "jobs" / "smoke.yaml",
                          {"workdir": str(tmp_path / "work"), "mlflow.tracking_uri": url})
        pipeline.run(cfg, ["prepare"], echo=lambda s: None)
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("gammaface-smoke")
        runs = client.search_runs([exp.experiment_id])
        stage = next(r for r in runs if r.data.tags.get("stage") == "prepare")
        parent = next(r for r in runs if r.data.tags.get("gammaface.kind") == "pipeline")
        assert stage.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert stage.data.metrics["rows_train"] == 160
        assert "config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        local = client.download_artifacts(parent.info.run_id, "config.yaml", str(tmp_path))
        assert "name: smoke" in open(local).read()
    assert not (tmp_path / "work" / "mlflow.db").exists()  # nothing fell back to the local store
    assert list((tmp_path / "server-artifacts").rglob("config.yaml"))
