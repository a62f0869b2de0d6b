"""The generate and pseudo_label stages on the smoke pipeline's upstream artifacts."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from gammaface import config
from gammaface.commands import export, pipeline
from gammaface.run import layout
from gammaface.common.errors import UserError
from gammaface.sampling import Sampler
from gammaface.data import manifest
from gammaface.data.cells import cell_codes
from gammaface.downstream import arms
from gammaface.generate import methods as generation
from gammaface.generate import shards
from gammaface.run.layout import GENERATED_GRID as GRID_FILE
from gammaface.metrics.generation import fairness_discrepancy
from gammaface.stages import folder as stage_folder
from tests import mlflow_helpers
from tests.upstream import SMOKE, SMOKE_K as K, copy_workdir


def _cfg(workdir, **overrides):
    return config.load(SMOKE, {"workdir": str(workdir), "gmm.k": K, **overrides})


@pytest.fixture(scope="module")
def upstream(smoke_upstream):
    """The smoke pipeline up to gmm_search (K forced to 3), shared by the session."""
    return smoke_upstream


def _copy(upstream, dest):
    return copy_workdir(upstream, dest, "generated", "labels")


@pytest.fixture(scope="module")
def generated(upstream, tmp_path_factory):
    """Every smoke set generated and labelled once for this module, on a copy of the upstream;
    tests copy it again before running further stages."""
    work = _copy(upstream, tmp_path_factory.mktemp("generated") / "work")
    pipeline.run(_cfg(work), ["generate", "pseudo_label"], echo=lambda s: None)
    return work


class _Heaviest(generation.Method):
    """A toy generation method that lives here and nowhere in the package: every image from
    the mixture's heaviest component, drawn as the config draws (`generate.draw`)."""

    family = "plain"
    default = False

    def settings(self, cfg):
        return ["generate.draw", "generate.temperature"]

    def inputs(self, cfg):
        return ["mixture"]

    def draw(self, given):
        gm = given.mixture
        spec = given.mixture_spec(gm.means_, gm.covariances_, gm.predict_proba(given.space_X))
        return generation.Draw(spec, np.array([given.cfg.generate.n]), [int(np.argmax(gm.weights_))])


@pytest.fixture
def heaviest():
    """The toy method, registered for one test."""
    method = generation.register(_Heaviest("toy_heaviest"))
    yield method
    generation.unregister(method.name)


class _Repeat(arms.Rule):
    """A toy control arm that lives here and nowhere in the package: as many repeats of the
    class's real images as the ratio asks, drawn at random, blind to the protected cells."""

    control = True

    def add(self, d):
        if not d.n_add:
            return arms.Added([], np.zeros(len(d.cells), dtype=np.int64))
        rows, _ = arms.take(d.real, d.n_add, d.seed_of(9), "real")
        codes = cell_codes(rows, d.protected)
        return arms.Added([arms.table_rows(rows, d.pools.real_root, d.c, "oversampled")],
                          np.bincount(codes[codes >= 0], minlength=len(d.cells)))


@pytest.fixture
def repeat():
    """The toy arm, registered for one test."""
    rule = arms.register(_Repeat("toy_repeat"))
    yield rule
    arms.unregister(rule.name)


def _run(cfg, stages) -> str:
    """The stages in this process, on the session's Ray; returns what they printed."""
    lines: list[str] = []
    pipeline.run(cfg, stages, echo=lines.append)
    return "\n".join(lines) + "\n"


def test_generate_and_pseudo_label_write_balanced_labelled_sets(generated, tmp_path, ray_local):
    work = copy_workdir(generated, tmp_path / "work")
    cfg = _cfg(work)
    gen, n = work / "generated", cfg.generate.n
    for method in cfg.generate.methods:
        df = pd.read_parquet(gen / method / manifest.MANIFEST_FILE)
        assert len(df) == n and df["path"].is_unique
        on_disk = sorted(str(p.relative_to(gen / method)) for p in (gen / method).glob("shard-*/*.png"))
        if generation.in_family(method, "quota"):  # renders written for a cell that filled meanwhile stay
            assert set(df["path"]) <= set(on_disk)
        else:
            assert sorted(df["path"]) == on_disk
        assert (gen / method / GRID_FILE).is_file()
    gmm = pd.read_parquet(gen / "gmm" / manifest.MANIFEST_FILE)
    assert gmm["component"].value_counts().tolist() == [n // K] * K  # the paper's equal counts
    weights = pd.read_csv(gen / "compositions.csv")["weight/gmm_weighted"].to_numpy()
    weighted = pd.read_parquet(gen / "gmm_weighted" / manifest.MANIFEST_FILE)
    got = weighted["component"].value_counts().reindex(range(K), fill_value=0).to_numpy()
    assert np.all(np.abs(got - n * weights) < 1)
    unconditional = pd.read_parquet(gen / "unconditional" / manifest.MANIFEST_FILE)
    assert (unconditional["component"] == -1).all()

    balance = json.loads((work / "labels" / "balance.json").read_text())
    sets = {row["set"]: row for row in balance["sets"]}
    assert set(sets) == {"train (dataset labels)", "train (labeller)", *cfg.generate.methods}
    key = ":".join(cfg.generate.protected)
    for method in cfg.generate.methods:
        labelled, root = manifest.read(work / "labels" / method / manifest.MANIFEST_FILE)
        assert len(labelled) == n and Path(root, labelled["path"][0]).is_file()
        for attr in cfg.classifiers.attributes:
            conf = labelled[f"{attr}_conf"]
            assert conf.between(1 / 3 - 1e-6, 1.0).all() and labelled[attr].notna().all()
        cells = np.zeros(len(labelled), dtype=int)
        for attr, size in (("age", 2), ("gender", 2), ("race", 3)):
            classes = {"age": ["young", "old"], "gender": ["female", "male"],
                       "race": ["white", "black", "other"]}[attr]
            cells = cells * size + labelled[attr].map(classes.index).to_numpy()
        assert sets[method][f"discrepancy/{key}"] == pytest.approx(fairness_discrepancy(cells, 12))
        assert sets[method][f"discrepancy_std/{key}"] > 0 or sets[method][f"discrepancy/{key}"] > 0.9

    # downstream resumes at the job: a rerun after losing its stage.json trains nothing again
    first = pipeline.run(cfg, ["downstream"], echo=lambda s: None)[0]
    (work / "downstream" / "stage.json").unlink()
    again = pipeline.run(cfg, ["downstream"], echo=lambda s: None)[0]
    assert first.rows["trained"] == first.rows["jobs"] > 0 and again.rows["trained"] == 0
    jobs = [r for r in mlflow_helpers.runs(work, "gammaface-smoke")
            if r.data.tags.get("gammaface.kind") == "downstream"]
    assert len(jobs) == first.rows["jobs"]  # the resumed stage reuses each job's MLflow run

    run = mlflow_helpers.stage_run(work, "gammaface-smoke", "generate")
    artifacts = mlflow_helpers.artifact_paths(work, run)
    assert {f"grids/{m}/{GRID_FILE}" for m in cfg.generate.methods} <= artifacts
    assert {"compositions.csv", "predicted_balance.csv"} <= artifacts
    label_run = mlflow_helpers.stage_run(work, "gammaface-smoke", "pseudo_label")
    assert f"balance/gmm/{key}" in label_run.data.metrics
    assert {"balance.json", "balance.png"} <= mlflow_helpers.artifact_paths(work, label_run)


def _generate_sets(methods=("gmm", "unconditional")):
    return {"generate.n": 96, "generate.methods": list(methods), "generate.steps": 20}


def _generate_cmd(work, methods=("gmm", "unconditional")):
    """`gammaface run` of the generate stage, for the runs a test kills."""
    cmd = [sys.executable, "-m", "gammaface", "run", str(SMOKE), "--stages", "generate",
           "--set", f"workdir={work}", "--set", f"gmm.k={K}"]
    for key, value in _generate_sets(methods).items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML
    return cmd


def _generate(work, methods=("gmm", "unconditional")) -> str:
    """The same generate stage in this process (a run nobody kills)."""
    return _run(_cfg(work, **_generate_sets(methods)), ["generate"])


def _files(work):
    gen = work / "generated"
    return {str(p.relative_to(gen)): p.read_bytes() for p in sorted(gen.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".parquet")}


def _kill_after(cmd, env, folder, pattern, shards_done):
    """Start `cmd` and SIGKILL the whole job (driver, raylet and actors) once `shards_done`
    shard folders match `pattern` under `folder`."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(folder.glob(pattern))) < shards_done:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_method_and_an_arm_registered_outside_the_package_run_through_generate_and_downstream(
        heaviest, repeat, generated, tmp_path, ray_local):
    work = _copy(generated, tmp_path / "work")
    sets = {"generate.methods": ["gmm", heaviest.name],
            "downstream.methods": ["baseline", heaviest.name, f"{heaviest.name}:fill", repeat.name],
            "downstream.ratios": [0.5], "downstream.seeds": 1}
    cfg = _cfg(work, **sets)
    assert heaviest.name not in config.load(SMOKE).generate.methods  # never a default
    _run(cfg, ["generate", "pseudo_label", "downstream"])

    gen, n = work / "generated", cfg.generate.n
    toy = pd.read_parquet(gen / heaviest.name / manifest.MANIFEST_FILE)
    weights = pd.read_csv(gen / "compositions.csv")["weight/gmm_weighted"].to_numpy()
    assert len(toy) == n and set(toy["component"]) == {int(np.argmax(weights))}
    plan = json.loads((gen / heaviest.name / "plan.json").read_text())
    assert plan["method_key"] not in {json.loads((gen / m / "plan.json").read_text())["method_key"]
                                      for m in ("gmm",)}
    # a method registered after the built-ins changes none of their images: the gmm set is the
    # bytes the module's run made without it
    for png in sorted((generated / "generated" / "gmm").glob("shard-*/*.png")):
        assert (gen / "gmm" / png.relative_to(generated / "generated" / "gmm")).read_bytes() == png.read_bytes()
    labels = pd.read_parquet(work / "labels" / heaviest.name / manifest.MANIFEST_FILE)
    assert len(labels) == n
    results = pd.read_csv(work / stage_folder("downstream", cfg) / cfg.downstream.target
                          / layout.DOWNSTREAM_RESULTS)
    assert {heaviest.name, f"{heaviest.name}:fill", repeat.name} <= set(results["method"])
    # the toy arm's training tables hold its repeats: at ratio 0.5 as many as the real images
    tables = list((work / stage_folder("downstream", cfg)).rglob(f"{repeat.name}/*/seed*/train.parquet"))
    assert len(tables) == cfg.downstream.seeds
    for path in tables:
        table = pd.read_parquet(path)
        n_real = cfg.downstream.n_per_class[0]
        assert table.groupby("label")["source"].value_counts().unstack()[["real", "oversampled"]] \
            .eq(n_real).all().all(), table["source"].value_counts()
    assert results["accuracy"].between(0, 1).all()

    # the key holds what the toy method declared: a setting it did not name redoes nothing
    again = _run(_cfg(work, **sets, **{"generate.alpha": 0.2}), ["generate"])
    assert "0 of" in again and "shards to render" in again, again


def test_a_run_killed_mid_generation_resumes_to_the_same_bytes(upstream, tmp_path, ray_local):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    clean = _copy(upstream, tmp_path / "clean")
    _generate(clean)

    killed = _copy(upstream, tmp_path / "killed")
    _kill_after(_generate_cmd(killed), env, killed / "generated", "*/shard-*", 2)
    done = len(list((killed / "generated").glob("*/shard-*")))
    assert 2 <= done < 24, "the kill did not land mid-run"
    assert not (killed / "generated" / "stage.json").exists()
    assert "images already complete" in _generate(killed)
    assert _files(killed) == _files(clean)

    # an image damaged in place after the stage completed: named, and only its shard redone
    png = sorted((killed / "generated" / "gmm").glob("shard-*/*.png"))[5]
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    said = _generate(killed)
    assert f"{png} (content differs from its recorded sha256)" in said
    assert "1 of 24 shards to render" in said
    assert _files(killed) == _files(clean)
    for method in ("gmm", "unconditional"):
        df = pd.read_parquet(killed / "generated" / method / manifest.MANIFEST_FILE)
        assert len(df) == 96 and df["path"].is_unique
        assert not list((killed / "generated" / method).glob(f"{shards.TMP_PREFIX}*"))

    # another method list reruns the stage but keeps every shard of the methods it shares
    said = _generate(killed, ("unconditional", "gmm", "single_gaussian"))
    assert "12 of 36 shards to render (192 images already complete)" in said
    assert {k: v for k, v in _files(killed).items() if not k.startswith("single")} == _files(clean)


QUOTA_SETS = {"generate.n": 8, "generate.quota.n": 48,  # the quota sets' size, apart from n
              "generate.methods": ["quota_adaptive", "quota_unconditional"],
              "generate.quota.cells": ["gender"], "generate.quota.budget": 10,
              # early exit: each render's x0 prediction read after its first UNet evaluation
              "generate.quota.exit_checks": [1],
              "generate.shard_size": 8, "downstream.methods": ["baseline"]}


def _quota_cmd(work):
    """`gammaface run` of the quota sets, for the run a test kills."""
    cmd = [sys.executable, "-m", "gammaface", "run", str(SMOKE), "--stages", "generate",
           "--set", f"workdir={work}", "--set", f"gmm.k={K}"]
    for key, value in QUOTA_SETS.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    return cmd


def _quota(work) -> str:
    """The same quota sets in this process (a run nobody kills)."""
    return _run(_cfg(work, **QUOTA_SETS), ["generate"])


def _kept_cells(method_dir: Path) -> dict[str, int]:
    """Per gender cell, the kept images the labeller put there, from the shard records."""
    df = pd.read_parquet(method_dir / manifest.MANIFEST_FILE)
    counts: dict[int, int] = {}
    for shard, part in df.groupby("shard"):
        record = json.loads((method_dir / f"shard-{shard:05d}" / shards.SHARD_FILE).read_text())
        for path in part["path"]:
            cell, confident, written, *_cost = record["renders"][int(Path(path).stem)]
            assert confident and written
            counts[cell] = counts.get(cell, 0) + 1
    return {["female", "male"][c]: n for c, n in sorted(counts.items())}


def test_quota_sets_fill_every_cell_exactly_and_a_killed_run_keeps_the_same_images(upstream,
                                                                                    tmp_path,
                                                                                    ray_local):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    clean = _copy(upstream, tmp_path / "clean")
    said = _quota(clean)
    stopped_early = 0
    for method in ("quota_adaptive", "quota_unconditional"):
        quota = json.loads((clean / "generated" / method / "quota.json").read_text())
        assert quota["complete"] and quota["kept"] == 48, said
        assert _kept_cells(clean / "generated" / method) == {"female": 24, "male": 24}
        assert quota["renders_per_kept"] == pytest.approx(quota["renders"] / 48)
        assert f"{method}: kept 48/48 from {quota['renders']} renders" in said
        # a plain sample runs every step of the grid; a mixture draw the steps below its start
        spacing = 1000 // quota["steps"]
        per_render = quota["steps"] if method == "quota_unconditional" else quota["t_start"] // spacing + 1
        assert quota["unet_per_render"] == per_render
        # a render stopped at the check took one UNet evaluation and one reading; a finished
        # one every step, and a reading at the check and one at its end
        exited, renders = quota["exited"], quota["renders"]
        assert quota["unet_evaluations"] == exited + (renders - exited) * per_render
        assert quota["unet_per_kept"] == pytest.approx(quota["unet_evaluations"] / 48)
        assert quota["labeller_evaluations"] == 2 * renders - exited
        assert f"{exited} stopped early" in said
        stopped_early += exited
        assert quota["seconds"] > 0 and quota["kept_per_second"] == pytest.approx(48 / quota["seconds"])
    # once a cell is full, renders read as that cell stop at the check
    assert stopped_early > 0

    killed = _copy(upstream, tmp_path / "killed")
    _kill_after(_quota_cmd(killed), env, killed / "generated", "quota_*/shard-*", 3)
    assert not (killed / "generated" / "stage.json").exists(), "the kill did not land mid-run"
    _quota(killed)
    assert _files(killed) == _files(clean)


def test_the_judge_learns_from_other_faces_and_audits_every_set(generated, tmp_path, ray_local):
    work = copy_workdir(generated, tmp_path / "work")
    cfg = _cfg(work)
    pipeline.run(cfg, ["train_judge", "generate", "pseudo_label", "audit"], echo=lambda s: None)
    data, _ = manifest.read(work / "data" / "synthfaces" / manifest.MANIFEST_FILE)
    judge_rows, _ = manifest.read(work / "judge" / "data" / manifest.MANIFEST_FILE)

    def digest(root, paths):
        return {hashlib.sha256((root / p).read_bytes()).hexdigest() for p in paths}

    seen = digest(work / "data" / "synthfaces", data["path"])
    mine = digest(work / "judge" / "data", judge_rows["path"])
    assert len(mine) == len(judge_rows) == cfg.judge.n and not (mine & seen)
    audit = pd.read_csv(work / "audit" / "audit.csv")
    assert set(audit["cells"]) == {"age:gender:race", "gender"}
    assert {"train (real)", "test (real)", *cfg.generate.methods} == set(audit["set"])
    for _, r in audit.iterrows():
        for kind in ("hard", "soft", "corrected"):
            assert r[f"{kind}_lo"] - 1e-9 <= r[kind] <= r[f"{kind}_hi"] + 1e-9 or r["n"] == 0
    test_row = audit[(audit["set"] == "test (real)") & (audit["cells"] == "gender")].iloc[0]
    assert 0.0 <= test_row["near_copy_share/pixels"] <= 0.05  # below its own 1st percentile

    # the quota set handed over as a Hugging Face imagefolder, with its card
    hashes = {n: pipeline.stage_hash(n, cfg) for n in ("generate", "pseudo_label", "audit")}
    out = export.export(cfg, "quota_adaptive", tmp_path / "handover", hashes)
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    labelled, _ = manifest.read(work / "labels" / "quota_adaptive" / manifest.MANIFEST_FILE)
    assert len(ds) == len(labelled) == cfg.generate.n
    assert sorted(ds["gender"]) == sorted(labelled["gender"])
    assert {"image", "component", "seed", "gender_conf", "age"} <= set(ds.column_names)
    assert ds[0]["image"].size == (cfg.ddpm_resolution,) * 2
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "| female | 12 |" in card and "| male | 12 |" in card
    assert "independent judge" in card
    quota = json.loads((work / "generated" / "quota_adaptive" / "quota.json").read_text())
    cost = f"{quota['renders']} renders of {quota['unet_per_render']} UNet evaluations each"
    if quota["exited"]:  # early exit, on by default
        cost += f" when finished; {quota['exited']} of them stopped early"
    assert cost in card and f"({quota['unet_evaluations']:,} in all)" in card
    if quota["kept"]:
        assert f"{quota['unet_per_kept']:.0f} UNet evaluations per kept image" in card
    with pytest.raises(UserError, match="already exists"):
        export.export(cfg, "quota_adaptive", out, hashes)

    # the README's notebook example, on this run
    s = Sampler.from_config(SMOKE, overrides={"workdir": str(work), "gmm.k": K})
    size = cfg.ddpm_resolution
    assert s.component(0, 4).shape == (4, size, size, 3)
    assert not np.array_equal(s.component(0, 4), s.component(1, 4))
    np.testing.assert_array_equal(s.component(2, 3, seed=5), s.component(2, 3, seed=5))
    assert s.method("gmm", 6).shape == (6, size, size, 3)
    faces, labels = s.cells({"female": 3, "male": 2}, attributes=["gender"])
    assert len(faces) == 5 and sorted(labels["gender"]) == ["female"] * 3 + ["male"] * 2
    with pytest.raises(UserError, match="is not a cell of gender"):
        s.cells({"woman": 1}, attributes=["gender"])

    # an image changed after the generate stage recorded it is named, and nothing handed over
    labelled, root = manifest.read(work / "labels" / "quota_adaptive" / manifest.MANIFEST_FILE)
    png = Path(root) / labelled["path"].iloc[3]
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    with pytest.raises(UserError) as err:
        export.export(cfg, "quota_adaptive", tmp_path / "damaged", hashes)
    assert f"image {png} differs from what the generate stage recorded" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "damaged").exists()
    assert not [p for p in tmp_path.iterdir() if "damaged" in p.name]
