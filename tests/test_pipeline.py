import json
from pathlib import Path

import pytest

from gammaface import config
from gammaface.commands import pipeline
from gammaface.data import manifest
from gammaface.common.errors import UserError
from tests import mlflow_helpers

REPO = Path(__file__).resolve().parents[1]


def _smoke(tmp_path, **overrides):
    cfg = config.load(REPO / "jobs" / "smoke.yaml", {"workdir": str(tmp_path / "work"), **overrides})
    return cfg


def test_prepare_writes_manifest_stage_json_and_mlflow_runs(tmp_path, ray_local):
    cfg = _smoke(tmp_path)
    results = pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    assert [r.stage for r in results] == ["prepare"] and not results[0].skipped
    folder = tmp_path / "work" / "data" / "synthfaces"
    record = json.loads((folder / "stage.json").read_text())
    assert record["config_hash"] == pipeline.stage_hash("prepare", cfg)
    assert record["rows"] == {"train": 160, "val": 20, "test": 20}
    assert record["versions"]["ray"] == "2.60.0" and record["versions"]["torch"] == "2.14.1"
    df, root = manifest.read(folder / manifest.MANIFEST_FILE)
    assert len(df) == 200 and Path(root, df["path"][0]).is_file()
    assert (folder / "samples.png").is_file()

    runs = mlflow_helpers.runs(tmp_path / "work", "gammaface-smoke")
    parent = [r for r in runs if r.data.tags.get("gammaface.kind") == "pipeline"]
    child = [r for r in runs if r.data.tags.get("stage") == "prepare"]
    assert len(parent) == 1 and len(child) == 1
    assert child[0].data.tags["mlflow.parentRunId"] == parent[0].info.run_id
    assert parent[0].data.params["data.synthfaces.n"] == "200"
    assert child[0].data.metrics["rows_train"] == 160
    inputs = mlflow_helpers.client(tmp_path / "work").get_run(child[0].info.run_id).inputs
    (logged,) = inputs.dataset_inputs
    assert logged.dataset.name == "manifest" and logged.dataset.digest
    assert json.loads(logged.dataset.profile)["num_rows"] == 200

    # a rerun with the same config skips; another seed reruns
    again = pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    assert again[0].skipped
    cfg2 = _smoke(tmp_path, **{"data.synthfaces.seed": 1})
    assert not pipeline.run(cfg2, ["prepare"], echo=lambda s: None)[0].skipped


def test_incomplete_stage_is_redone(tmp_path, ray_local):
    cfg = _smoke(tmp_path)
    pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    stage_json = tmp_path / "work" / "data" / "synthfaces" / "stage.json"
    stage_json.write_text("{ half written")
    assert not pipeline.run(cfg, ["prepare"], echo=lambda s: None)[0].skipped
    assert json.loads(stage_json.read_text())["stage"] == "prepare"


def test_stage_hash_follows_dependencies():
    a = config.from_dict({})
    b = config.from_dict({"data": {"synthfaces": {"n": 10}}})
    c = config.from_dict({"gmm": {"k": 3}})
    assert pipeline.stage_hash("train_ddpm", a) != pipeline.stage_hash("train_ddpm", b)
    assert pipeline.stage_hash("prepare", a) == pipeline.stage_hash("prepare", c)
    assert pipeline.stage_hash("train_classifiers", a) == pipeline.stage_hash("train_classifiers", c)
    assert pipeline.stage_hash("generate", a) != pipeline.stage_hash("generate", c)


def test_stage_selection_errors():
    with pytest.raises(UserError, match="unknown stage 'prepar'"):
        pipeline.select(["prepar"])
    assert pipeline.select(None) == list(pipeline.STAGE_NAMES)
    assert pipeline.select(["report", "prepare"]) == ["prepare", "report"]  # pipeline order


def test_two_pipelines_in_one_process_each_log_to_their_own_store(tmp_path, ray_local):
    for name in ("a", "b"):
        pipeline.run(_smoke(tmp_path / name), ["prepare"], echo=lambda s: None)
    for name in ("a", "b"):
        assert len(mlflow_helpers.runs(tmp_path / name / "work", "gammaface-smoke")) == 2  # its own parent and prepare run, nothing of the other


def test_a_stage_record_covers_its_outputs_but_not_ray_trains_checkpoints(tmp_path):
    """A training stage's checkpoints are where a stopped run resumes from, not its outputs: a
    local workdir records what a remote one does (where Ray Train writes them to the bucket)."""
    import hashlib

    from gammaface.run import layout, stage
    from gammaface.storage.store import Store

    folder = tmp_path / "classifiers"
    (folder / layout.RAY_TRAIN_DIR / "run" / "checkpoint_0").mkdir(parents=True)
    (folder / layout.RAY_TRAIN_DIR / "run" / "checkpoint_0" / "model.safetensors").write_bytes(b"c")
    (folder / "model.safetensors").write_bytes(b"weights")
    notes = b"a file named like the folder is recorded"
    (folder / "ray_train_notes.txt").write_bytes(notes)
    record = stage.digests(Store(folder))
    assert record == {"model.safetensors": [7, hashlib.sha256(b"weights").hexdigest()],
                      "ray_train_notes.txt": [len(notes), hashlib.sha256(notes).hexdigest()]}
    (folder / layout.STAGE_FILE).write_text(json.dumps({"config_hash": "h", "files": record}))
    # a damaged checkpoint of a completed stage is not the stage's damage; a damaged output is
    (folder / layout.RAY_TRAIN_DIR / "run" / "checkpoint_0" / "model.safetensors").write_bytes(b"x")
    assert stage.damaged(Store(folder)) == []
    (folder / "model.safetensors").write_bytes(b"weightz")
    assert stage.damaged(Store(folder)) == [("model.safetensors",
                                             "content differs from its recorded sha256")]
