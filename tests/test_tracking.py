"""MLflow tracking on a real SQLite store: logging outside a run, the workers' run logger, and
reading the downstream jobs back."""

import pickle

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gammaface.run import tracking
from gammaface.common.errors import UserError


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.use_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def test_logging_outside_a_run_starts_no_run(store):
    exp = mlflow.create_experiment("quiet")
    tracking.log_metrics({"x": 1.0})
    tracking.log_params({"a": 1})
    tracking.log_text("hello", "note.txt")
    assert mlflow.active_run() is None
    assert MlflowClient(store).search_runs([exp]) == []


def test_a_worker_run_pickles_without_its_client_and_logs_to_its_run(store, tmp_path):
    exp = mlflow.create_experiment("workers", artifact_location=str(tmp_path / "art"))
    with mlflow.start_run(experiment_id=exp) as run:
        log = tracking.worker_run()
    assert log.run_id == run.info.run_id and log.uri == store
    log.metrics({"loss": 0.5}, step=1)  # makes its client
    shipped = pickle.loads(pickle.dumps(log))  # as Ray sends it to a worker
    assert shipped._client is None
    shipped.metrics({"loss": 0.25}, step=2)
    shipped.image(np.zeros((4, 4, 3), np.uint8), "step_2.png")
    shipped.image(np.zeros((4, 4, 3), np.uint8), "samples", step=7)
    client = MlflowClient(store)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == \
        [(1, 0.5), (2, 0.25)]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/step_2.png"]
    stepped = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any(p.startswith("images/samples+step+7+") and p.endswith(".png") for p in stepped)
    other = client.create_run(exp)
    log.for_run(other.info.run_id).metrics({"acc": 0.9}, step=1)
    assert client.get_run(other.info.run_id).data.metrics == {"acc": 0.9}
    tracking.WorkerRun(store, None).metrics({"lost": 1.0}, step=1)  # no run: nothing, no error


def _job(client, exp, pipeline_run, method, ratio, seed, bias):
    run = client.create_run(exp, tags={tracking.KIND_TAG: "downstream",
                                       tracking.PIPELINE_TAG: pipeline_run,
                                       "mlflow.parentRunId": pipeline_run, "method": method,
                                       "ratio": str(ratio), "seed": str(seed), "n_per_class": "50",
                                       "target": "smile", "protected": "gender"})
    client.log_metric(run.info.run_id, "bias/gender", bias)
    return run.info.run_id


def test_downstream_runs_are_read_back_per_pipeline_run(store):
    client = MlflowClient(store)
    exp = client.create_experiment("ablation")
    old, new = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    _job(client, exp, old, "baseline", 0.0, 0, 0.3)
    ids = {_job(client, exp, new, m, r, s, b) for m, r, s, b in
           [("baseline", 0.0, 0, 0.2), ("gmm", 0.5, 0, 0.1), ("gmm", 0.5, 1, 0.15)]}
    latest = tracking.downstream_runs("ablation", tracking_uri=store)
    assert set(latest["run_id"]) == ids  # the most recent pipeline run's jobs only
    assert sorted(latest["bias/gender"]) == [0.1, 0.15, 0.2]
    assert latest.loc[latest["method"] == "gmm", "ratio"].tolist() == [0.5, 0.5]
    assert len(tracking.downstream_runs(run_id=old, tracking_uri=store)) == 1
    with pytest.raises(UserError, match="no experiment 'nothing'"):
        tracking.downstream_runs("nothing", tracking_uri=store)
    with pytest.raises(UserError, match="no run abc"):
        tracking.downstream_runs(run_id="abc", tracking_uri=store)


def test_downstream_runs_of_a_workdir_are_its_own_when_workdirs_share_a_store(store):
    client = MlflowClient(store)
    exp = client.create_experiment("shared")
    mine = client.create_run(exp, tags={tracking.WORKDIR_TAG: "/runs/it's mine"}).info.run_id
    theirs = client.create_run(exp, tags={tracking.WORKDIR_TAG: "/runs/theirs"}).info.run_id
    own = {_job(client, exp, mine, "baseline", 0.0, 0, 0.2)}
    _job(client, exp, theirs, "baseline", 0.0, 0, 0.4)  # the experiment's latest
    got = tracking.downstream_runs("shared", tracking_uri=store, workdir="/runs/it's mine")
    assert set(got["run_id"]) == own
    with pytest.raises(UserError, match="in experiment 'shared' for workdir /runs/nowhere"):
        tracking.downstream_runs("shared", tracking_uri=store, workdir="/runs/nowhere")


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_reading_runs_from_a_store_that_does_not_exist_creates_nothing(tmp_path, kind):
    missing = tmp_path / "typo" / ("mlflow.db" if kind == "sqlite" else "mlruns")
    uri = f"sqlite:///{missing}" if kind == "sqlite" else f"file://{missing}"
    with pytest.raises(UserError, match="no MLflow store at"):
        tracking.downstream_runs("x", tracking_uri=uri)
    assert not (tmp_path / "typo").exists()


def test_a_pipeline_run_records_system_metrics_at_its_interval(tmp_path):
    import time

    from gammaface import config
    from gammaface.storage.store import Store

    cfg = config.from_dict({"workdir": str(tmp_path / "w"), "mlflow": {"system_metrics": 0.2}})
    with tracking.pipeline_run(cfg, Store(cfg.workdir), ["prepare"]) as run_id:
        time.sleep(2.0)  # several intervals: the monitor thread samples while the stages run
    uri = tracking.tracking_uri(cfg, Store(cfg.workdir))
    keys = set(MlflowClient(uri).get_run(run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys
    quiet = config.from_dict({"workdir": str(tmp_path / "q"), "mlflow": {"system_metrics": None}})
    with tracking.pipeline_run(quiet, Store(quiet.workdir), ["prepare"]) as run_id:
        time.sleep(0.5)
    uri = tracking.tracking_uri(quiet, Store(quiet.workdir))
    assert not [k for k in MlflowClient(uri).get_run(run_id).data.metrics if k.startswith("system/")]
