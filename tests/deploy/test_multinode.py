"""A real two-node Ray cluster on this machine: a head and a second node, each its own
`ray start` process, the second offering a custom resource. The smoke pipeline runs on it with
the generate and label actors and the DDPM's training worker asked onto the second node, and
its results are checked against the same pipeline on one local node. Both start from the
session's smoke upstream; the two-node run trains the DDPM again (on the second node), and its
model, images and labels must equal the one-node run's byte for byte."""

import hashlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from ray.util.state import list_actors

from gammaface import config
from gammaface.commands import pipeline
from tests.deploy.manifests import REPO
from tests.deploy.servers import env_with_venv, ray_head, ray_node
from tests.upstream import copy_workdir, skipped_stages

STAGES = "prepare,train_ddpm,train_classifiers,harvest,gmm_search,generate,pseudo_label"
# the smoke config trains on one worker per stage, so each has the same threads on one node and
# on two (each node has 2 CPUs): results are then equal byte for byte, not only up to rounding.
# Only the generated sets differ from the smoke config, so the one-node run's upstream is the
# session's smoke upstream.
SETS = ["generate.methods=[gmm,quota_mixture]", "downstream.methods=[baseline,gmm]"]
PLACED = ("ray.resources={generate: {second: 1}, pseudo_label: {second: 1}, train_ddpm: {second: 1}, "
          "train_classifiers: {second: 1}}")


def _run(work, *extra):
    args = [sys.executable, "-m", "gammaface", "run", "jobs/smoke.yaml", "--stages", STAGES,
            "--set", f"workdir={work}"]
    for s in [*SETS, *extra]:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env_with_venv(),
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _run_here(work, upstream):
    """The same stages on one node: this process on the session's local Ray (2 CPUs, as each
    node of the cluster has), which is what `gammaface run` without an address does; the stages
    up to the mixture search are the session's smoke upstream, which ran the same way."""
    copy_workdir(upstream, work)
    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in SETS)}
    lines: list[str] = []
    pipeline.run(config.load(REPO / "jobs" / "smoke.yaml", {**sets, "workdir": str(work)}),
                 STAGES.split(","), echo=lines.append)
    assert skipped_stages("\n".join(lines)) == STAGES.split(",")[:5]


def _images(work):
    """sha256 of every generated image, by its path under the workdir."""
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((work / "generated").rglob("*.png"))}


def _labels(work, method):
    frame = pd.read_parquet(work / "labels" / method / "manifest.parquet")
    return frame.sort_values("path").reset_index(drop=True)


@pytest.mark.e2e
def test_the_pipeline_on_two_nodes_places_work_where_asked_and_equals_one_node(tmp_path, smoke_upstream):
    # the upstream stages without the DDPM's: it is trained again, placed on the second node
    shutil.rmtree(copy_workdir(smoke_upstream, tmp_path / "two") / "ddpm")
    with ray_head(tmp_path) as head, ray_node(tmp_path, head, {"second": 4}) as second:
        done = _run(tmp_path / "two", f"ray.address={head.gcs}", PLACED)
        actors = list_actors(address=head.url, detail=True, limit=10000)
    where = {}
    for a in actors:
        for part in ("RenderShards", "LabelBatch", "RayTrainWorker"):
            if part in a.class_name:
                where.setdefault(part, set()).add(a.node_id)
    names = sorted({a.class_name for a in actors})
    assert set(where) == {"RenderShards", "LabelBatch", "RayTrainWorker"}, names
    # every actor and training worker of the placed stages ran on the second node
    assert where == {"RenderShards": {second}, "LabelBatch": {second}, "RayTrainWorker": {second}}, \
        (where, second)

    assert skipped_stages(done.stdout) == ["prepare", "train_classifiers", "harvest", "gmm_search"]

    _run_here(tmp_path / "one", smoke_upstream)
    weights = "ddpm/unet/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "one" / weights).read_bytes() == (tmp_path / "two" / weights).read_bytes()
    one, two = _images(tmp_path / "one"), _images(tmp_path / "two")
    assert len(one) > 40 and one == two
    for method in ("gmm", "quota_mixture"):
        pd.testing.assert_frame_equal(_labels(tmp_path / "one", method), _labels(tmp_path / "two", method))
