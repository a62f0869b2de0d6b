"""Every shipped config under jobs/ runs end to end on a fixture of its dataset's real format.

The test runs the shipped file as it is and changes only the keys in TOY (sizes, steps and
workers; the same list for every config, as `--set` would pass them) and the paths (workdir and
the dataset's folders): never the methods, attributes, targets, ratios or the stage list. Every
training stage runs on one Ray Train worker: a second costs each stage about 7 s here and checks
nothing a config chooses (two-worker DDP is tested in tests/diffusion and tests/classifiers). A
config dropped into jobs/ is picked up here without editing this file.

A config that a RayJob under k8s/jobs/ runs with `--stages` or `--from` runs here the same way:
its stages, started from the toy workdir of the config whose shipped workdir `--from` names (on
the same dataset fixture, as on the cluster both read the same volume).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gammaface import config
from gammaface.run import layout, stage, tracking
from gammaface.commands import pipeline
from gammaface.storage import lock as workdir_lock
from gammaface.config import quota_n
from gammaface.generate import methods as generation
from gammaface.data import manifest
from gammaface.downstream.mixing import BASELINE, jobs
from gammaface.stages import folder as stage_folder
from gammaface.storage.store import Store
from tests import mlflow_helpers
from tests.data.fixtures import write_fairface_dataset, write_ffhq_dataset
from tests.upstream import copy_workdir, skipped_stages

REPO = Path(__file__).resolve().parents[1]

# The one list of settings a test changes in a shipped config (the same for every config):
# sizes, steps and workers, so that a whole pipeline runs in about two minutes on 2 cores. The
# labeller trains a few epochs so that even noise-like toy samples get both classes of a target;
# a toy labeller keeps few renders, so a quota set stops at 4 renders per image asked for (the
# shipped budgets of 16 to 24 cost the study's toy run about 30 s of renders that keep nothing).
TOY: dict[str, object] = {
    "ray.address": None, "ray.num_cpus": 2, "ray.object_store_memory": 200_000_000,
    "data.synthfaces.n": 200, "data.synthfaces.size": 16,
    "ddpm.preset": "tiny", "ddpm.resolution": 8, "ddpm.train_steps": 10, "ddpm.batch_size": 16,
    "ddpm.warmup_steps": 2, "ddpm.checkpoint_every": 10, "ddpm.sample_every": 0,
    "ddpm.sample_steps": 4, "ddpm.log_every": 5, "ddpm.num_workers": 1, "ddpm.use_gpu": False,
    "ddpm.max_failures": 0,
    "classifiers.backbone": "resnet18", "classifiers.epochs": 4, "classifiers.batch_size": 32,
    "classifiers.image_size": 8, "classifiers.num_workers": 1, "classifiers.use_gpu": False,
    "classifiers.max_failures": 0, "judge.n": 200,
    "harvest.n": 64, "harvest.steps": 10, "harvest.batch_size": 32, "harvest.concurrency": 1,
    "harvest.num_gpus": 0,
    "gmm.k_max": 3, "gmm.pca_dim": 8,
    "generate.n": 40, "generate.quota.n": None, "generate.steps": 4, "generate.shard_size": 8,
    "generate.batch_size": 8,
    "generate.concurrency": 1, "generate.num_gpus": 0, "generate.pilot": 8, "generate.grid": 4,
    "generate.quota.max_rounds": 3,  # a toy labeller may never fill a cell: rounds cost, not size
    "generate.quota.budget": 4,
    "label.batch_size": 32, "label.concurrency": 1, "label.num_gpus": 0, "label.bootstrap": 20,
    "downstream.n_per_class": [10], "downstream.seeds": 1, "downstream.backbone": "resnet18",
    "downstream.epochs": 1, "downstream.batch_size": 16, "downstream.num_workers": 2,
    "downstream.use_gpu": False, "downstream.max_failures": 0, "downstream.eval.n_per_cell": 8,
}
# what a config is about: the test never changes these
MEANING = ("data.dataset", "classifiers.attributes", "generate.methods", "generate.protected",
           "downstream.target", "downstream.protected", "downstream.methods", "downstream.ratios",
           "downstream.mixing",
           "harvest.source", "harvest.t_star", "gmm.space")


def rayjob_args(job: Path) -> tuple[list[str] | None, str | None]:
    """(--stages, --from) of the RayJob whose entrypoint runs this config, if one does."""
    for path in sorted((REPO / "k8s" / "jobs").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            words = shlex.split((doc or {}).get("spec", {}).get("entrypoint", ""))
            if f"jobs/{job.name}" not in words:
                continue
            flags = dict(zip(words, words[1:]))
            stages = flags.get("--stages")
            return (stages.split(",") if stages else None), flags.get("--from")
    return None, None


def source_config(job: Path) -> str | None:
    """The shipped config whose workdir this config's RayJob starts `--from`."""
    _, start = rayjob_args(job)
    if start is None:
        return None
    for other in sorted((REPO / "jobs").glob("*.yaml")):
        if yaml.safe_load(other.read_text()).get("workdir") == start:
            return other.stem
    raise AssertionError(f"{job.name}: --from {start} is no shipped config's workdir")


# configs started from another one's workdir run after it
JOBS = sorted((REPO / "jobs").glob("*.yaml"), key=lambda p: (source_config(p) is not None, p.name))


def dataset_paths(dataset: str, root: Path) -> dict[str, object]:
    """The dataset settings that point at a fixture in that dataset's format under `root`
    (written once; a config started from another's workdir reads the same files)."""
    if dataset == "ffhq":
        images, features = root / "ffhq", root / "ffhq-features"
        if not images.exists():
            write_ffhq_dataset(root)
        # the shipped configs name the folder that holds thumbnails128x128/
        return {"data.ffhq.images": str(images), "data.ffhq.features": str(features)}
    if dataset == "fairface":
        labels, images = root / "fairface-labels", root / "fairface"
        if not labels.exists():
            write_fairface_dataset(root)
        return {"data.fairface.labels": str(labels), "data.fairface.images": str(images)}
    return {}


def toy_overrides(job: Path, root: Path, data_root: Path | None = None) -> dict[str, object]:
    """TOY, the dataset fixture's paths (under `data_root`, default `root`) and the workdir."""
    return {**TOY, **dataset_paths(dataset_of(job), (data_root or root) / "data"),
            "workdir": str(root / "work")}


def run_toy(job: Path, root: Path, data_root: Path | None = None, stages: list[str] | None = None,
            start_from: Path | None = None, extra: dict[str, object] | None = None) -> str:
    """Run the config at toy size in this process, on the session's local Ray (what `gammaface
    run` does, without starting a Ray per config); returns what it printed."""
    lines: list[str] = []
    cfg = config.load(job, {**toy_overrides(job, root, data_root), **(extra or {})})
    pipeline.run(cfg, stages, echo=lines.append,
                 start_from=str(start_from) if start_from else None)
    return "\n".join(lines) + "\n"


def run_cli(job: Path, root: Path, data_root: Path | None = None,
            extra: dict[str, object] | None = None) -> subprocess.CompletedProcess:
    """`gammaface run` on the config at toy size, the TOY keys passed as `--set`."""
    sets = {**toy_overrides(job, root, data_root), **(extra or {})}
    workdir = sets.pop("workdir")
    cmd = [sys.executable, "-m", "gammaface", "run", str(job), "--workdir", str(workdir)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML
    return subprocess.run(cmd, capture_output=True, text=True, cwd=root)


# roots (workdir and fixture) of the configs this module ran, for the tests that start from one
COMPLETED: dict[str, Path] = {}


# configs whose MLflow store a test reads stage by stage (each model registered by its own
# stage's run): they copy nothing in with `--from` and start from the session's smoke upstream
OWN_RUNS = {"smoke"}


def dataset_of(job: Path) -> str:
    return (yaml.safe_load(job.read_text()).get("data") or {}).get("dataset", "synthfaces")


def earlier_on_same_data(job: Path, request) -> Path | None:
    """The workdir this config starts from on the embedded dataset: the toy root of the config
    this module ran last on SynthFaces, else the session's smoke upstream (the first config
    finds the data, the DDPM and the classifiers trained there with its toy settings). Its
    completed stages that this config shares (the same stage hash, nothing else) are copied in
    with `--from` rather than trained again. Dataset folders are per root, so only the embedded
    SynthFaces is shared this way; RayJob configs start from their source instead."""
    if dataset_of(job) != "synthfaces" or job.stem in OWN_RUNS:
        return None
    same = [root for name, root in COMPLETED.items() if name not in OWN_RUNS
            and dataset_of(REPO / "jobs" / f"{name}.yaml") == "synthfaces"]
    return same[-1] / "work" if same else request.getfixturevalue("smoke_upstream")


def own_start(job: Path, root: Path, request) -> None:
    """A config of OWN_RUNS starts from a copy of the session's smoke upstream (its workdir and
    MLflow store alike; the same stage hashes, as the smoke config's upstream is at TOY size),
    so every stage it reads back was run in the store the test reads."""
    if job.stem in OWN_RUNS:
        copy_workdir(request.getfixturevalue("smoke_upstream"), root / "work")


def completed(name: str, tmp_path_factory, request) -> Path:
    if name not in COMPLETED:
        root = tmp_path_factory.mktemp(name)
        job = REPO / "jobs" / f"{name}.yaml"
        own_start(job, root, request)
        run_toy(job, root)
        COMPLETED[name] = root
    return COMPLETED[name]


@pytest.mark.e2e
@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_shipped_config_runs_end_to_end_on_its_dataset(job, tmp_path_factory, ray_local, request):
    root = tmp_path_factory.mktemp(job.stem)
    stages, _ = rayjob_args(job)
    source = source_config(job)
    source_root = completed(source, tmp_path_factory, request) if source else None
    overrides = toy_overrides(job, root, source_root)
    cfg = config.load(job, overrides)
    shipped = config.load(job)
    for key in MEANING:
        assert cfg.flat()[key] == shipped.flat()[key], key

    own_start(job, root, request)
    started = time.perf_counter()
    start = source_root / "work" if source_root else earlier_on_same_data(job, request)
    stdout = run_toy(job, root, source_root, stages, start)
    seconds = time.perf_counter() - started

    selected = pipeline.select(stages)
    work = Path(cfg.workdir)
    for name in selected:
        folder = Store(str(work / stage_folder(name, cfg)))
        assert stage.completed_hash(folder) == pipeline.stage_hash(name, cfg), name
    reused = skipped_stages(stdout)
    if source_root:  # what the source completed with the same settings was copied, not rerun
        assert "train_ddpm" in reused and "train_classifiers" in reused, stdout
        assert "copied from" in stdout
    for method in cfg.generate.methods:
        df, _ = manifest.read(work / "labels" / method / manifest.MANIFEST_FILE)
        if generation.in_family(method, "quota"):  # a toy labeller may leave cells short at the budget
            quota = json.loads((work / "generated" / method / layout.GENERATED_QUOTA).read_text())
            assert len(df) == quota["kept"] <= quota_n(cfg) == cfg.generate.n
            assert quota["complete"] or quota["stopped"] in ("budget", "rounds")
        else:
            assert len(df) == cfg.generate.n
    if "audit" in selected:
        audit = pd.read_csv(work / "audit" / layout.AUDIT_CSV)
        assert set(cfg.generate.methods) <= set(audit["set"])
    if {"train_judge", "train_classifiers"} <= set(selected) - set(reused) \
            and cfg.data.dataset != "synthfaces":
        # the judge's share of the train split and the labeller's are disjoint and whole
        judge = json.loads((work / "judge" / "metrics.json").read_text())
        train, _ = manifest.read(work / layout.manifest_path(cfg))
        n_train = int((train["split"] == "train").sum())
        labeller_rows = mlflow_helpers.stage_run(work, cfg.mlflow.experiment, "train_classifiers"
                                                 ).data.params["classifiers.train_rows"]
        assert 0 < judge["train_rows"] < n_train
        assert judge["train_rows"] + int(labeller_rows) == n_train
    record = {"config": job.name, "dataset": cfg.data.dataset, "stages": selected,
              "reused": reused, "seconds": round(seconds, 1),
              "generated_images": cfg.generate.n * len(cfg.generate.methods),
              "stage_seconds": {
                  name: round(json.loads((work / stage_folder(name, cfg) / stage.STAGE_FILE)
                                         .read_text())["timings"]["seconds"], 1)
                  for name in selected if name not in reused}}
    if "downstream" in selected:
        d = cfg.downstream
        expected = jobs(d.n_per_class, d.methods, d.ratios, d.seeds, d.mixing)
        results = pd.read_csv(work / "downstream" / d.target / "results.csv")
        assert len(results) == len(expected)
        assert set(results["method"]) == set(d.methods)
        assert results["accuracy"].between(0, 1).all()
        record.update(downstream_jobs=len(expected),
                      baseline_jobs=sum(j.method == BASELINE for j in expected))
    if "report" in selected:
        _check_report_page(work / "report")
    print(json.dumps(record))  # what each shipped config did on its fixture, for the record
    COMPLETED[job.stem] = root


def _check_report_page(folder: Path) -> None:
    """report.html holds every figure report.md names, each one a PNG that decodes."""
    import base64
    import io
    from html.parser import HTMLParser

    from PIL import Image

    class Images(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.sources: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    figures_named = (folder / "report.md").read_text().count("![")
    page = Images()
    page.feed((folder / "report.html").read_text())
    assert figures_named >= 5 and len(page.sources) == figures_named
    for src in page.sources:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            assert min(im.size) > 10


@pytest.mark.e2e
def test_the_smoke_run_tracks_every_job_in_mlflow_compares_from_it_and_reruns_as_a_no_op(
        tmp_path_factory, ray_local, request):
    """The smoke pipeline's MLflow runs, the comparison read back from MLflow equal to what was
    logged, and a second run of the same command that does nothing but print the table."""
    root = completed("smoke", tmp_path_factory, request)
    smoke = REPO / "jobs" / "smoke.yaml"
    cfg = config.load(smoke, toy_overrides(smoke, root))
    work = Path(cfg.workdir)
    assert not (root / "mlruns").exists()  # artifacts stay in the workdir

    d = cfg.downstream
    runs = mlflow_helpers.runs(work, cfg.mlflow.experiment)
    stage_run = next(r for r in runs if r.data.tags.get("stage") == "downstream")
    job_runs = [r for r in runs if r.data.tags.get("gammaface.kind") == "downstream"]
    expected = {(j.method, f"{j.ratio:g}", str(j.seed))
                for j in jobs(d.n_per_class, d.methods, d.ratios, d.seeds, d.mixing)}
    assert {(r.data.tags["method"], r.data.tags["ratio"], r.data.tags["seed"]) for r in job_runs} \
        == expected
    assert len(job_runs) == len(expected)
    for r in job_runs:
        assert r.data.tags["mlflow.parentRunId"] == stage_run.info.run_id
        assert r.data.tags["target"] == "smile" and r.data.tags["protected"] == "age,gender"
        assert {"accuracy", "tpr", "bias/age:gender", "ba/age", "ba_x100/age:gender",
                "tpr/age:gender/young:female", "worst_tpr/age:gender",
                "eval_n/yes/old:male"} <= set(r.data.metrics)
        # scored on the equal-cell evaluation set; every arm carries its paired difference
        assert r.data.metrics["eval_n/yes/old:male"] == d.eval.n_per_cell
        if r.data.tags["method"] != BASELINE:
            assert {"delta/bias/age:gender", "delta/accuracy", "delta_low/bias/age:gender",
                    "delta_high/bias/age:gender"} <= set(r.data.metrics)
    assert {r.data.tags["mixing"] for r in job_runs} >= {"augment", "fill", "replace",
                                                          "oversample", "reweight"}
    # grouped by the settings upstream of the generated sets, with real timestamps
    selected = json.loads((work / "gmm" / layout.GMM_SELECTED).read_text())
    found = mlflow_helpers.client(work).search_runs(
        [job_runs[0].info.experiment_id], max_results=1000,
        filter_string=f"params.`upstream.k` = '{selected['k']}' and "
        f"params.`upstream.space` = '{selected['space']}' and "
        f"params.`upstream.t_star` = '{selected['t_star']}'")
    assert {r.info.run_id for r in found} >= {r.info.run_id for r in job_runs}
    history = mlflow_helpers.client(work).get_metric_history(job_runs[0].info.run_id, "accuracy")
    assert history and history[-1].timestamp >= job_runs[0].info.start_time
    # system metrics on the pipeline run; the two models registered, each by its stage's run
    client = mlflow_helpers.client(work)
    parent = client.get_run(job_runs[0].data.tags[tracking.PIPELINE_TAG])
    assert "system/cpu_utilization_percentage" in parent.data.metrics
    for kind, stage_name in (("ddpm", "train_ddpm"), ("labeller", "train_classifiers")):
        version = client.get_latest_versions(f"{cfg.name}-{kind}")[0]
        assert version.run_id == mlflow_helpers.stage_run(work, cfg.mlflow.experiment,
                                                          stage_name).info.run_id
    # the README's example, against this store
    import mlflow

    tracking.use_tracking_uri(f"sqlite:///{work / layout.MLFLOW_DB}")
    faces = mlflow.pyfunc.load_model(f"models:/{cfg.name}-ddpm/latest").predict(
        pd.DataFrame({"seed": range(3)}), params={"steps": 5})
    labels = mlflow.pyfunc.load_model(f"models:/{cfg.name}-labeller/latest").predict(faces)
    assert faces.shape[0] == 3 and faces.dtype.name == "uint8"
    assert len(labels) == 3 and set(cfg.classifiers.attributes) <= set(labels.columns)

    out = root / "cmp"
    cmp = subprocess.run([sys.executable, "-m", "gammaface", "compare", str(smoke),
                          "--workdir", str(work), "--out", str(out)], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    table = pd.read_csv(out / "compare.csv")
    logged = pd.DataFrame([{"method": r.data.tags["method"], "ratio": float(r.data.tags["ratio"]),
                            "accuracy": r.data.metrics["accuracy"],
                            "bias": r.data.metrics["bias/age:gender"]} for r in job_runs])
    means = logged.groupby(["method", "ratio"]).mean()
    for row in table.itertuples():
        assert row.Acc_mean == pytest.approx(means.loc[(row.method, row.ratio), "accuracy"])
        assert row.B_mean == pytest.approx(means.loc[(row.method, row.ratio), "bias"])
    assert (out / "compare.md").is_file() and (out / "compare.png").is_file()

    # the same run from the command line finds everything done and still ends with its table
    again = run_cli(smoke, root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert skipped_stages(again.stdout) == list(pipeline.STAGE_NAMES)
    table = [[c.strip() for c in line.strip("|").split("|")] for line in again.stdout.splitlines()
             if line.startswith("|")]
    at = max(i for i, row in enumerate(table) if row[:2] == ["n/class", "arm"] and "ΔB ↓" in row)
    header = table[at]
    rows = [dict(zip(header, row)) for row in table[at + 2:] if len(row) == len(header)]
    gmm = next(r for r in rows if (r.get("arm"), r.get("ratio")) == ("gmm", "0.5"))
    assert gmm["ΔB ↓"] != "n/a" and gmm["mixing"] == "augment"
    assert f"report: {work / 'report' / 'report.md'}" in again.stdout


def _text_files(root: Path):
    """Every artifact a stage wrote that could name a file (not MLflow's artifact store, nor Ray
    Train's run folders, which only Ray reads, nor the lock's note of who last ran here)."""
    for path in root.rglob("*"):
        if path.name == workdir_lock.HOLDER_FILE:
            continue
        if path.suffix in {".json", ".csv", ".yaml", ".txt", ".md"} and not any(
                part in {"mlartifacts", "ray_train"} for part in path.relative_to(root).parts):
            yield path


@pytest.mark.e2e
def test_a_copied_workdir_runs_from_its_copy_and_a_new_seed_trains_only_its_jobs(
        tmp_path_factory, ray_local, request):
    root = completed("smoke", tmp_path_factory, request)
    smoke = REPO / "jobs" / "smoke.yaml"
    original = root / "work"
    new_root = tmp_path_factory.mktemp("copy")
    copy = new_root / "work"
    shutil.copytree(original, copy, symlinks=True)
    # no artifact names a file by the original's absolute path (nor by the path of the upstream
    # the smoke run started from, where its first stages wrote) ...
    for where in (str(original), str(request.getfixturevalue("smoke_upstream"))):
        for path in _text_files(copy):
            assert where not in path.read_text(errors="replace"), path
        for path in copy.rglob("*.parquet"):
            df = pd.read_parquet(path)
            for col in df.select_dtypes(include=object).columns:
                assert not df[col].astype(str).str.contains(where, regex=False).any(), path
    # ... and with the original out of the way, the copy runs from itself: the mixture search
    # re-reads the harvested latents' manifest, and one more seed trains only that seed's jobs
    (copy / "gmm" / stage.STAGE_FILE).unlink()
    hidden = original.with_name("moved-away")
    original.rename(hidden)
    try:
        seeds = TOY["downstream.seeds"] + 1
        stdout = run_toy(smoke, new_root, data_root=root, extra={"downstream.seeds": seeds})
        assert not original.exists()  # nothing was written into the original's place
    finally:
        hidden.rename(original)
    reused = skipped_stages(stdout)
    assert "gmm_search" not in reused and "generate" in reused
    cfg = config.load(smoke, {**toy_overrides(smoke, new_root), "downstream.seeds": seeds})
    d = cfg.downstream
    every = jobs(d.n_per_class, d.methods, d.ratios, d.seeds, d.mixing)
    record = json.loads((copy / stage_folder("downstream", cfg) / stage.STAGE_FILE).read_text())
    assert record["rows"] == {"jobs": len(every),
                              "trained": sum(j.seed == seeds - 1 for j in every)}
    assert len(pd.read_csv(copy / "downstream" / d.target / "results.csv")) == len(every)
