import json

import pandas as pd
import pytest

from gammaface import config
from gammaface.commands import pipeline
from gammaface.gmm import GaussianMixture
from tests import mlflow_helpers
from tests.upstream import SMOKE, SMOKE_K, copy_workdir, skipped_stages


def test_harvest_and_search_stages_write_every_artifact(smoke_upstream, tmp_path, ray_local):
    # the session's smoke DDPM and latents; the search runs again in another space
    work = copy_workdir(smoke_upstream, tmp_path / "w")
    cfg = config.load(SMOKE, {"workdir": str(work), "gmm.k": SMOKE_K, "gmm.space": "pca",
                              "gmm.pca_dim": 16})
    lines: list[str] = []
    pipeline.run(cfg, ["prepare", "train_ddpm", "harvest", "gmm_search"], echo=lines.append)
    assert skipped_stages("\n".join(lines)) == ["prepare", "train_ddpm", "harvest"]
    gmm = work / "gmm"
    table = pd.read_csv(gmm / "bic.csv")
    assert list(table["k"]) == [1, 2, 3]  # the smoke config searches K = 1..3
    assert {"bic", "aic", "lower_bound", "n_iter", "converged", "seconds"} <= set(table.columns)
    assert (gmm / "bic.png").stat().st_size > 1000 and (gmm / "pca.npz").is_file()
    selected = json.loads((gmm / "selected.json").read_text())
    assert selected["k"] == 3 and selected["chosen_by"] == "forced" and selected["dim"] == 16
    assert set(selected["nmi"]) == {"age", "gender", "race", "smile", "glasses", "hair"}
    for k in range(1, 4):
        assert GaussianMixture.load(gmm / f"gmm_k{k}.npz").means_.shape == (k, 16)
    comp = pd.read_csv(gmm / "components.csv")
    assert len(comp) == 3 and comp["count"].sum() == cfg.harvest.n == 64
    assert comp["weight"].sum() == pytest.approx(1.0)

    run = mlflow_helpers.stage_run(work, "gammaface-smoke", "gmm_search")
    history = mlflow_helpers.client(work).get_metric_history(run.info.run_id, "bic")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert "nmi_race" in run.data.metrics
    logged = {a.path for a in mlflow_helpers.client(work).list_artifacts(run.info.run_id)}
    assert {"bic.csv", "bic.png", "selected.json", "components.csv", "gmm_k3.npz"} <= logged

    # the sweep reuses the trained DDPM: one table row per (source, t*, space), merged over runs
    from gammaface.commands.sweep import sweep

    def hash_of(stage):
        return pipeline.stage_hash(stage, cfg)

    from gammaface.run import tracking
    from gammaface.storage.store import Store

    with tracking.pipeline_run(cfg, Store(cfg.workdir), ["harvest", "gmm_search"],
                               kind="sweep") as sweep_id:
        table = sweep(cfg, [100, 300], [0, 8], ["forward"], hash_of, echo=lambda s: None)
    assert len(table) == 4 and set(table["space"]) == {"pixels", "pca8"}
    # tracked: the sweep a run, each (t*, space) a nested run with its params and figures
    client = mlflow_helpers.client(work)
    exp = client.get_experiment_by_name("gammaface-smoke").experiment_id
    nested = client.search_runs([exp], f"tags.mlflow.parentRunId = '{sweep_id}' and "
                                       f"tags.`{tracking.KIND_TAG}` = 'setting'")
    searched = {(r.data.params["harvest.t_star"], r.data.params["gmm.space"]): r
                for r in nested if "gmm.space" in r.data.params}
    assert set(searched) == {("100", "pixels"), ("100", "pca8"), ("300", "pixels"), ("300", "pca8")}
    for _, row in table.iterrows():
        run = searched[(str(row["t_star"]), row["space"])]
        assert run.data.metrics["chosen_k"] == row["chosen_k"]
    logged = {a.path for a in client.list_artifacts(sweep_id, "sweep")}
    assert {"sweep/sweep.csv", "sweep/sweep.png"} <= logged
    assert set(table["t_star"]) == {100, 300}
    again = sweep(cfg, [300], [0], ["forward"], hash_of, echo=lambda s: None)
    assert len(again) == 4
    assert (work / "sweep" / "sweep.md").read_text().count("\n") == 6
