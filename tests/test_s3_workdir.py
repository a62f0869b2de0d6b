"""An `s3://` workdir against a real S3-compatible server on loopback: the copies between a
local mirror and the bucket, and the smoke pipeline run there, killed mid-generation and
resumed on another machine (another mirror) from what the first one had published. The bucket
starts with the session's smoke upstream but for its two training stages, which Ray Train runs
again into the bucket."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gammaface import config
from gammaface.run import layout, stage
from gammaface.commands import pipeline
from gammaface.stages import folder as stage_folder
from gammaface.storage.store import CACHE_ENV, TMP_MARK, Store, mirror_of, pull, push
from tests.upstream import SMOKE_UPSTREAM, skipped_stages

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "jobs" / "smoke.yaml"


@pytest.fixture(scope="module", autouse=True)
def reach_s3(s3):
    """The session's S3 server, reachable from this process while this module runs."""
    saved = {k: os.environ.get(k) for k in s3.env}
    os.environ.update(s3.env)  # pyarrow's S3 filesystem reads the endpoint from here
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _remote_tree(store: Store) -> dict[str, bytes]:
    return {rel: store.read_bytes(rel) for rel in sorted(store.files())}


def test_push_and_pull_copy_only_what_differs_and_the_record_goes_last(s3, tmp_path):
    remote = Store(s3.bucket("copies") + "/stage")
    local = tmp_path / "a"
    (local / "shard-0").mkdir(parents=True)
    for i in range(3):
        (local / "shard-0" / f"{i}.png").write_bytes(bytes([i]) * (100 + i))
    (local / "old.txt").write_text("gone soon")
    (local / "stage.json").write_text("{}")
    assert push(Store(local), remote, {}, last=("stage.json",)) == 5
    assert _remote_tree(remote) == _tree(local)

    # a second machine: everything fetched; then it changes one file (same size) and drops one
    other = tmp_path / "b"
    shared = pull(remote, Store(other))
    assert _tree(other) == _tree(local) and len(shared) == 5
    (other / "shard-0" / "1.png").write_bytes(b"\xff" * 101)
    (other / "old.txt").unlink()
    (other / "stage.json").write_text('{"done": 1}')
    assert push(Store(other), remote, shared, last=("stage.json",)) == 2
    assert _remote_tree(remote) == _tree(other)
    assert not any(TMP_MARK in rel for rel in remote.files())

    # against a stage's record, a local copy of the right size but other bytes is fetched again
    record = stage.digests(Store(other))
    (local / "shard-0" / "1.png").write_bytes(b"\x00" * 101)
    pull(remote, Store(local), record)
    assert (local / "shard-0" / "1.png").read_bytes() == b"\xff" * 101

    # a folder something else writes in the bucket (Ray Train's checkpoints) is neither
    # fetched nor deleted
    remote.write_bytes("ray_train/run/checkpoint_0/model.safetensors", b"weights")
    fresh = tmp_path / "c"
    assert "ray_train/run/checkpoint_0/model.safetensors" not in pull(
        remote, Store(fresh), leave=("ray_train",))
    assert not (fresh / "ray_train").exists() and (fresh / "stage.json").exists()
    push(Store(fresh), remote, {}, leave=("ray_train",))
    assert remote.read_bytes("ray_train/run/checkpoint_0/model.safetensors") == b"weights"
    push(Store(fresh), remote, {})
    assert not remote.exists("ray_train/run/checkpoint_0/model.safetensors")


def test_fetch_leaves_exactly_the_completed_stage(s3, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.bin").write_bytes(b"x" * 10)
    (src / "y.json").write_text("[1]")
    Store(src).write_json(layout.STAGE_FILE, {"config_hash": "h", "files": stage.digests(Store(src))})
    remote = Store(s3.bucket("fetch") + "/stage")
    push(Store(src), remote, {})
    mirror = tmp_path / "mirror"
    (mirror / "sub").mkdir(parents=True)
    (mirror / "sub" / "stale.bin").write_bytes(b"left by another config")
    stage.fetch(remote, Store(mirror))
    assert _tree(mirror) == _tree(src)
    assert stage.completed_hash(Store(mirror)) == "h"


def _sets(workdir: str, tmp: Path) -> dict[str, object]:
    return {"workdir": workdir, "mlflow.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "generate.methods": ["gmm", "unconditional"], "generate.n": 48,
            "downstream.methods": ["baseline", "gmm"], "downstream.ratios": [1.0]}


def _cmd(workdir: str, tmp: Path, stages: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "gammaface", "run", str(SMOKE)]
    for key, value in _sets(workdir, tmp).items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML
    return cmd + (["--stages", stages] if stages else [])


UPSTREAM = "prepare,train_ddpm,train_classifiers,harvest,gmm_search"
TRAINED_HERE = ("train_ddpm", "train_classifiers")


@pytest.mark.e2e
def test_the_smoke_pipeline_on_s3_resumes_a_killed_generation_on_another_machine(s3, tmp_path,
                                                                                 monkeypatch,
                                                                                 ray_local,
                                                                                 smoke_upstream):
    root = s3.bucket("gammaface") + "/smoke"
    cfg = config.load(SMOKE, {"workdir": root})
    # the upstream stages that train nothing (and the judge) are the session's, as a user would
    # upload them; the stage hashes are the same, as the settings are
    for name in (n for n in SMOKE_UPSTREAM if n not in TRAINED_HERE):
        rel = stage_folder(name, cfg)
        push(Store(smoke_upstream / rel), Store(root).sub(rel), {}, last=(layout.STAGE_FILE,),
             leave=(layout.RAY_TRAIN_DIR,))  # the judge's checkpoints are no part of its record
    # A machine is a mirror of the bucket: its runs here share this process and the session's
    # Ray (whose workers reach the bucket), and the killed one is a process group of its own.
    machine = {m: {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
                   CACHE_ENV: str(tmp_path / m)} for m in ("a", "b")}

    def run_on(m: str, stages: str | None = None) -> str:
        monkeypatch.setenv(CACHE_ENV, machine[m][CACHE_ENV])
        lines: list[str] = []
        pipeline.run(config.load(SMOKE, _sets(root, tmp_path)),
                     stages.split(",") if stages else None, echo=lines.append)
        return "\n".join(lines) + "\n"

    up = run_on("a", UPSTREAM)
    assert skipped_stages(up) == ["prepare", "harvest", "gmm_search"]
    assert "uploaded to s3://gammaface/smoke/ddpm" in up
    # Ray Train wrote the training stages' checkpoints to the bucket itself (a killed training
    # resumes from them on any machine); machine a's mirror holds none of them
    mirror_a = Path(mirror_of(Store(root)).path())
    for name in TRAINED_HERE:
        rel = stage_folder(name, cfg)
        held = [f for f in Store(root).sub(rel).files() if f.startswith(f"{layout.RAY_TRAIN_DIR}/")]
        assert any(f.endswith("/model.safetensors") for f in held), (name, held)
        assert (mirror_a / rel / layout.STAGE_FILE).exists()
        assert not (mirror_a / rel / layout.RAY_TRAIN_DIR).exists(), name

    # machine a is killed (driver, raylet, actors) once two shards have reached the bucket
    gen = Store(root).sub(stage_folder("generate", cfg))
    proc = subprocess.Popen(_cmd(root, tmp_path, "generate"), env=machine["a"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and sum(
            rel.endswith("/shard.json") for rel in gen.files()) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # an upload the server had whole when the sender died still lands
    published = sum(rel.endswith("/shard.json") for rel in gen.files())
    assert 2 <= published < 12 and not gen.exists(layout.STAGE_FILE), "the kill missed the run"

    # machine b has no mirror: it starts from the bucket, keeps the published shards, finishes
    rest = run_on("b")
    assert "[prepare] complete for this config, skipped" in rest
    said = [line for line in rest.splitlines() if "shards to render" in line]
    assert said and said[0].startswith(f"  {12 - published} of 12 shards to render"), said
    for name in ("train_judge", "generate", "pseudo_label", "audit", "downstream", "report"):
        folder = Store(root).sub(stage_folder(name, cfg))
        assert stage.completed_hash(folder) is not None, name
        assert stage.damaged(folder) == [], name
    assert not any(TMP_MARK in rel for rel in Store(root).files())
    assert (tmp_path / "mlartifacts").is_dir()  # MLflow's artifacts beside its SQLite file

    # the same generated bytes as a local workdir that started from the same upstream stages
    local = tmp_path / "local"
    mirror = Path(mirror_of(Store(root)).path())  # machine b's, which fetched every upstream stage
    for name in UPSTREAM.split(","):
        rel = stage_folder(name, cfg)
        shutil.copytree(mirror / rel, local / rel)
    # in this process, on the session's Ray: a local workdir needs no machine of its own
    pipeline.run(config.load(SMOKE, _sets(str(local), tmp_path / "local")), ["generate"],
                 echo=lambda s: None)
    want = {k: v for k, v in _tree(local / stage_folder("generate", cfg)).items()
            if k.endswith((".png", ".parquet"))}
    got = {k: v for k, v in _remote_tree(gen).items() if k.endswith((".png", ".parquet"))}
    assert len(want) > 96 and got == want
