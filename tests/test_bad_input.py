"""Bad input, table by table: each case gets one sentence naming the culprit, exit 2 from the
command line, and no traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import numpy as np
import pandas as pd

from gammaface import config
from gammaface.commands import pipeline
from gammaface.run import stage
from gammaface.data import fairface, ffhq
from gammaface.data import registry
from gammaface.data.synthfaces_spec import Spec
from gammaface.common.images import load_resized
from gammaface.common.errors import UserError, explain
from gammaface.latents import store as latent_store
from gammaface.storage.store import Store
from tests.data.fixtures import ffhq_face, write_fairface, write_ffhq

REPO = Path(__file__).resolve().parents[1]
SMOKE = (REPO / "jobs" / "smoke.yaml").read_text()


def _one_sentence(msg: str, *fragments: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg, msg
    for f in fragments:
        assert f in msg, msg


def _alias_bomb(levels: int = 10) -> bytes:
    """A few hundred bytes of YAML whose aliases, each naming ten of the level below, would
    expand to 10**levels strings."""
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    return ("\n".join(lines) + "\nname: bomb\n").encode()


# (config file bytes, --set arguments, what the sentence must name)
CONFIG_CASES = {
    "aliases nested ten deep": (_alias_bomb(), [], ["alias *l0 is not accepted", "line 2"]),
    "a merge key": (b"base: &b\n  k: 3\ngmm:\n  <<: *b\n", [], ["alias *b is not accepted",
                                                                   "line 4"]),
    "--set with an alias": (SMOKE.encode(), ["gmm=*x"], ["--set gmm", "alias *x is not accepted"]),
    "empty file": (b"", [], ["is empty"]),
    "only a comment": (b"# nothing yet\n", [], ["is empty"]),
    "top level a list": (b"- a\n- b\n", [], ["top level must be a mapping", "list"]),
    "latin-1 bytes": ("name: d\xe9mo\n".encode("latin-1"), [], ["is not UTF-8 text"]),
    "duplicate key": (b"gmm:\n  k: 3\n  k: 4\n", [], ["key 'k' is given twice", "line 3"]),
    "boolean as a count": (b"harvest:\n  n: true\n", [], ["harvest.n", "takes a number, not true"]),
    "NaN as a rate": (b"ddpm:\n  learning_rate: .nan\n", [], ["ddpm.learning_rate"]),
    "infinite ratio": (b"downstream:\n  ratios: [.inf]\n", [], ["downstream.ratios"]),
    "method twice": (b"downstream:\n  methods: [baseline, gmm, gmm]\n", [], ["a method is named twice"]),
    "no method": (b"downstream:\n  methods: []\n", [], ["name at least one method"]),
    "mixing rule on a control": (b"downstream:\n  methods: [baseline, 'oversample:fill']\n", [],
                                 ["'oversample:fill'", "only a generated set takes a mixing rule"]),
    "unknown mixing rule": (b"downstream:\n  methods: [baseline, 'gmm:blend']\n", [],
                            ["'gmm:blend'", "augment, replace, fill"]),
    "unknown default mixing": (b"downstream:\n  mixing: blend\n", [], ["downstream.mixing"]),
    "ratio twice": (b"downstream:\n  ratios: [0.5, 0.5]\n", [], ["a ratio is named twice"]),
    "quota shares that overflow": (b"generate:\n  quota:\n    cells: [gender]\n    shares: "
                                   b"{female: 1.0e+308, male: 1.0e+308}\n", [],
                                   ["generate.quota.shares", "too large to add up"]),
    "a quota share not a number": (b"generate:\n  quota:\n    cells: [gender]\n    shares: "
                                   b"{female: .nan, male: 1}\n", [],
                                   ["generate.quota.shares.female", "finite number"]),
    "an exit check before any step": (SMOKE.encode(), ["generate.quota.exit_checks=[0]"],
                                      ["generate.quota.exit_checks", "at least 1"]),
    "exit checks out of order": (SMOKE.encode(), ["generate.quota.exit_checks=[3, 1]"],
                                 ["generate.quota.exit_checks", "increasing order"]),
    "protected twice": (b"downstream:\n  protected: [age, age]\n", [], ["named twice"]),
    "t* beyond the schedule": (SMOKE.encode(), ["harvest.t_star=5000"],
                               ["harvest.t_star = 5000 must lie between 1 and 999"]),
    "downstream method not generated": (SMOKE.encode(), ["generate.methods=[gmm]"],
                                        ["downstream.methods names unconditional",
                                         "generate.methods does not make"]),
    "forced K above the latents": (SMOKE.encode(), ["gmm.k=500"], ["gmm.k = 500 is more than"]),
    "resolution the UNet cannot halve": (SMOKE.encode(), ["ddpm.preset=small", "ddpm.resolution=7"],
                                         ["ddpm.resolution = 7", "divisible by 4"]),
    "SynthFaces size the UNet cannot halve": (SMOKE.encode(), ["ddpm.preset=small",
                                                               "ddpm.resolution=null",
                                                               "data.synthfaces.size=18"],
                                              ["data.synthfaces.size = 18", "divisible by 4"]),
    "K range above the latents": (SMOKE.encode(), ["gmm.k_max=500"], ["gmm.k_max = 500 is more"]),
    "--set not YAML": (SMOKE.encode(), ["gmm.k=[3"], ["--set gmm.k", "not valid YAML"]),
    "--set under a scalar": (SMOKE.encode(), ["seed.x=1"], ["--set seed.x", "'seed' is a int"]),
    "--set under a list": (SMOKE.encode(), ["downstream.methods.x=1"],
                           ["--set downstream.methods.x", "is a list"]),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=str)
def test_a_bad_config_is_one_sentence_and_exit_2(case, tmp_path):
    text, sets, fragments = CONFIG_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    cmd = [sys.executable, "-m", "gammaface", "config", "show", str(path)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    _one_sentence(out.stderr.strip(), *fragments)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + SMOKE.encode())
    assert config.load(path).name == "smoke"


def test_fairface_csv_edge_cases(tmp_path):
    rows = [["train/1.jpg", "20-29", "Male", "White", "True"]]
    labels, images = write_fairface(tmp_path / "bom", rows, rows and [["val/1.jpg", "3-9", "Female",
                                                                        "Black", "True"]])
    for name in ("fairface_label_train.csv", "fairface_label_val.csv"):
        p = labels / name
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert len(fairface.load(labels, images)) == 2  # a byte-order mark is not part of `file`

    labels, images = write_fairface(tmp_path / "empty", [], [], make_images=False)
    with pytest.raises(UserError) as err:
        fairface.load(labels, images)
    _one_sentence(str(err.value), "fairface_label_train.csv has a header but no rows")

    for bad in ("/etc/passwd", "../outside.jpg", "train/../../x.jpg"):
        labels, images = write_fairface(tmp_path / "esc", [[bad, "20-29", "Male", "White", "True"]],
                                        [], make_images=False)
        with pytest.raises(UserError) as err:
            fairface.load(labels, images)
        _one_sentence(str(err.value), "line 2", "must be a path relative to the images folder")

    labels, images = write_fairface(tmp_path / "latin", rows, [], make_images=False)
    (labels / "fairface_label_train.csv").write_bytes(
        "file,age,gender,race,service_test\ntrain/\xe9.jpg,20-29,Male,White,True\n".encode("latin-1"))
    with pytest.raises(UserError) as err:
        fairface.load(labels, images)
    _one_sentence(str(err.value), "fairface_label_train.csv is not UTF-8 text")


def test_ffhq_json_edge_cases(tmp_path):
    faces = {0: [ffhq_face(age=30)], 1: [ffhq_face(age=50)]}
    # json.dumps writes NaN, as a careless export does
    images, features = write_ffhq(tmp_path / "nan", {**faces, 2: [ffhq_face(age=float("nan"))]})
    with pytest.raises(UserError) as err:
        ffhq.load(images, features)
    _one_sentence(str(err.value), "00002.json", "age = nan is not a finite number")

    images, features = write_ffhq(tmp_path / "latin", faces)
    (features / "json" / "00001.json").write_bytes('[{"x": "\xe9"}]'.encode("latin-1"))
    with pytest.raises(UserError) as err:
        ffhq.load(images, features)
    _one_sentence(str(err.value), "00001.json is not UTF-8 text")


def test_a_synthfaces_spec_with_an_alias_is_one_sentence(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(_alias_bomb())
    with pytest.raises(UserError) as err:
        Spec.from_yaml(path)
    _one_sentence(str(err.value), str(path), "alias *l0 is not accepted")


@pytest.mark.parametrize("value", [float("nan"), 1.5, -0.1])
def test_a_synthfaces_probability_must_lie_in_0_1(value):
    raw = {a: {c: 1 / len(registry.get(a).classes) for c in registry.get(a).classes}
           for a in registry.ATTRIBUTE_NAMES}
    raw["age"] = {"young": value, "old": 0.5}
    with pytest.raises(UserError) as err:
        Spec(raw, source="spec.yaml")
    _one_sentence(str(err.value), "spec.yaml", "age.young", "is not a probability")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_local):
    """A workdir whose `prepare` stage has completed (SynthFaces at toy size)."""
    work = tmp_path_factory.mktemp("prepared") / "work"
    cfg = config.load(REPO / "jobs" / "smoke.yaml", {"workdir": str(work)})
    pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    return cfg, work


def test_a_setting_refused_at_load_leaves_completed_stages_alone(prepared, tmp_path):
    cfg, work = prepared
    record = work / "data" / "synthfaces" / "stage.json"
    before = record.read_bytes()
    spec = tmp_path / "spec.yaml"
    spec.write_text("age: {young: 0.5, old: [0.5\n")  # not YAML: read only when prepare reruns
    for bad in (["harvest.t_star=5000"], ["generate.methods=[gmm]"],
                ["ddpm.preset=small", "ddpm.resolution=7"], [f"data.synthfaces.spec={spec}"]):
        cmd = [sys.executable, "-m", "gammaface", "run", str(REPO / "jobs" / "smoke.yaml"),
               "--workdir", str(work)]
        for b in bad:
            cmd += ["--set", b]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert record.read_bytes() == before, bad
    assert f"SynthFaces spec {spec} is not valid YAML" in out.stderr


def _damage(path: Path) -> bytes:
    """Flip one byte in the middle of a file, keeping its size; returns the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def test_from_a_read_only_workdir_copies_its_stages(prepared, tmp_path):
    _, work = prepared
    mount = tmp_path / "mnt"
    mount.mkdir()
    why = _mount_rights(mount)
    if why:
        pytest.skip(why)
    new = tmp_path / "new"
    script = (f"mount --bind {work} {mount} && mount -o remount,ro,bind {mount} && exec "
              f"{sys.executable} -m gammaface run {REPO / 'jobs' / 'smoke.yaml'} --stages prepare "
              f"--from {mount} --workdir {new}")
    out = subprocess.run([*_UNSHARE, "sh", "-c", script], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"copied from {mount}: prepare" in out.stdout
    assert "[prepare] complete for this config, skipped" in out.stdout
    assert stage.damaged(Store(new / "data" / "synthfaces")) == []


def test_a_file_damaged_after_its_stage_completed_is_named_and_redone(prepared):
    cfg, work = prepared
    image = sorted((work / "data" / "synthfaces" / "images").glob("*.png"))[3]
    original = _damage(image)
    # a stage that reads it, run on its own, refuses before anything runs
    with pytest.raises(UserError) as err:
        pipeline.run(cfg, ["train_ddpm"], echo=lambda s: None)
    _one_sentence(str(err.value), str(image), "content differs from its recorded sha256",
                  "add 'prepare' to --stages")
    # a run that includes the stage says so and redoes what the file held
    lines: list[str] = []
    pipeline.run(cfg, ["prepare"], echo=lines.append)
    assert any(str(image) in line and "changed after the stage completed" in line for line in lines)
    assert image.read_bytes() == original
    assert stage.damaged(Store(work / "data" / "synthfaces")) == []


def test_damaged_latents_and_images_are_named(tmp_path):
    folder = Store(tmp_path / "latents")
    name = latent_store.write_shard(folder, 0, np.ones((4, 6), np.float32))
    folder.write_parquet(latent_store.INDEX_FILE, pd.DataFrame(
        {"row": range(4), "shard": name, "offset": range(4), "seed": range(4), "source_path": ""}))
    full = Path(folder.path(name)).read_bytes()
    Path(folder.path(name)).write_bytes(full[: len(full) - 20])  # cut short, as a full disk leaves it
    with pytest.raises(UserError) as err:
        latent_store.load_rows(folder)
    _one_sentence(str(err.value), "latents shard", folder.path(name), "is damaged")

    from PIL import Image

    png = tmp_path / "faces" / "a.png"
    png.parent.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(png)
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(UserError) as err:
        load_resized(str(png.parent), ["a.png"], 8)
    _one_sentence(str(err.value), str(png), "does not decode")


def _raise_user_error() -> None:
    raise UserError("image /data/x.png does not decode.")


def test_explain_finds_the_sentence_in_what_ray_and_the_os_raise(ray_local, tmp_path):
    import ray

    task = ray.remote(_raise_user_error)
    with pytest.raises(Exception) as wrapped:
        ray.get(task.remote())
    assert explain(wrapped.value) == "image /data/x.png does not decode."
    # Ray Train hands a worker's failure back as the text of its traceback
    text = RuntimeError("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\n"
                        "Traceback (most recent call last):\n  ...\n"
                        "OSError: [Errno 28] No space left on device: '/w/ddpm/x.pt'\n")
    assert explain(text) == "/w/ddpm/x.pt: the disk is full; free space and rerun the same command to resume."
    with pytest.raises(OSError) as full:
        with open("/dev/full", "wb") as f:  # a device that is always full
            f.write(b"x" * 10_000)
            f.flush()
    assert explain(full.value, where="workdir W") == ("workdir W: the disk is full; free space and "
                                                      "rerun the same command to resume.")
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError) as not_dir:
        (tmp_path / "f" / "x").mkdir(parents=True)
    assert explain(not_dir.value).startswith(f"{tmp_path / 'f' / 'x'}: ")
    assert explain(ValueError("a bug")) is None  # a bug keeps its traceback


def test_compare_on_a_workdir_without_a_store_creates_nothing(tmp_path):
    missing = tmp_path / "no-such-run"
    out = subprocess.run([sys.executable, "-m", "gammaface", "compare", str(REPO / "jobs" / "smoke.yaml"),
                          "--workdir", str(missing)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    _one_sentence(out.stderr.strip(), str(missing), "holds no MLflow store")
    assert not missing.exists()


def _mount_rights(mount: Path) -> str | None:
    """None where the test may mount a small tmpfs at `mount` in a mount namespace of its own
    (root, or an unprivileged user namespace), else the reason it may not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run([*_UNSHARE, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mount}"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


_UNSHARE = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gammaface", *args], capture_output=True,
                          text=True, cwd=REPO, env=env)


def test_a_workdir_that_is_a_file_or_unreachable_is_one_sentence(tmp_path):
    smoke = str(REPO / "jobs" / "smoke.yaml")
    (tmp_path / "afile").write_text("")
    out = _run("run", smoke, "--stages", "prepare", "--workdir", str(tmp_path / "afile"))
    assert out.returncode == 2
    _one_sentence(out.stderr.strip(), str(tmp_path / "afile"), "exists and is not a folder")

    # an S3 endpoint on a loopback port where nothing listens
    out = _run("run", smoke, "--stages", "prepare", "--workdir",
               "s3://bucket/work?endpoint_override=127.0.0.1:9&scheme=http",
               "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert out.returncode == 2
    _one_sentence(out.stderr.strip(), "s3://bucket/work", "object store is unreachable")


def test_a_read_only_workdir_is_one_sentence(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    why = _mount_rights(mount)
    if why:
        pytest.skip(why)
    script = (f"mount -t tmpfs -o size=4m tmpfs {mount} && mkdir {mount}/w && "
              f"mount -o remount,ro {mount} && exec {sys.executable} -m gammaface run "
              f"{REPO / 'jobs' / 'smoke.yaml'} --stages prepare --workdir {mount}/w")
    out = subprocess.run([*_UNSHARE, "sh", "-c", script], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    _one_sentence(out.stderr.strip().splitlines()[-1], f"{mount}/w", "read-only")


def test_submit_refuses_a_config_outside_what_it_uploads(tmp_path):
    for config_path in (str(REPO / "jobs" / "smoke.yaml"), "../outside.yaml"):
        out = _run("submit", config_path, "--address", "http://127.0.0.1:9")
        assert out.returncode == 2
        _one_sentence(out.stderr.strip(), config_path, "is not a file inside the working directory")


def test_a_config_driven_dataset_error_names_the_config_key(tmp_path):
    out = _run("run", str(REPO / "jobs" / "ffhq.yaml"), "--stages", "prepare",
               "--workdir", str(tmp_path / "w"), "--set", f"data.ffhq.images={tmp_path / 'none'}")
    assert out.returncode == 2
    _one_sentence(out.stderr.strip().splitlines()[-1], "data.ffhq.images", str(tmp_path / "none"),
                  "does not exist")
    assert "--images" not in out.stderr


def _statuses(db: Path) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id: r.info.status for r in client.search_runs(ids)}


TOY_SETS = ["data.synthfaces.n=200", "ddpm.preset=tiny", "ddpm.resolution=8", "ddpm.train_steps=10",
            "ddpm.checkpoint_every=10", "ddpm.sample_every=0", "ddpm.sample_steps=4",
            "ddpm.warmup_steps=2"]


def test_a_stopped_run_ends_its_mlflow_runs_as_killed(tmp_path):
    cmd = [sys.executable, "-m", "gammaface", "run", str(REPO / "jobs" / "smoke.yaml"), "--stages",
           "prepare", "--workdir", str(tmp_path / "w")]
    for s in TOY_SETS:
        cmd += ["--set", s]
    out, err_file = tmp_path / "out", tmp_path / "err"
    # to files: Ray's processes would hold a pipe open after the command has gone
    with open(out, "w") as o, open(err_file, "w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=REPO)
        deadline = time.time() + 120
        while "[prepare] running" not in out.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # inside the stage's MLflow run, while its Ray starts
        proc.send_signal(signal.SIGTERM)  # as a scheduler stops a job
        proc.wait(timeout=120)
    err = err_file.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "stopped by SIGTERM; rerun the same command to resume"
    statuses = _statuses(tmp_path / "w" / "mlflow.db")
    assert sorted(statuses.values()) == ["KILLED", "KILLED"]  # the pipeline's run and prepare's


@pytest.mark.pipeline
def test_sigterm_during_training_exits_143_and_says_sigterm(tmp_path):
    cmd = [sys.executable, "-m", "gammaface", "run", str(REPO / "jobs" / "smoke.yaml"), "--stages",
           "prepare,train_ddpm", "--workdir", str(tmp_path / "w"), "--set", "ddpm.train_steps=2000"]
    out, err_file = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err_file, "w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=REPO)
        checkpoints = tmp_path / "w" / "ddpm" / "ray_train"
        deadline = time.time() + 180
        while not list(checkpoints.glob("*/checkpoint_*")) and time.time() < deadline:
            time.sleep(0.2)  # a first checkpoint: inside Ray Train's fit
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = err_file.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "stopped by SIGTERM; rerun the same command to resume"
    # the pipeline's run and train_ddpm's end as KILLED; prepare's had finished
    assert sorted(_statuses(tmp_path / "w" / "mlflow.db").values()) == ["FINISHED", "KILLED",
                                                                         "KILLED"]


@pytest.mark.pipeline
@pytest.mark.parametrize("spawned", ["gcs_server", "raylet"])
def test_sigterm_while_ray_starts_stops_within_seconds(tmp_path, spawned):
    """A pod's stop has a grace period of 30 s: a SIGTERM that lands while the local Ray head
    is starting (its GCS server or its raylet just spawned) ends the run, and the head's processes, well
    within it."""
    import psutil

    cmd = [sys.executable, "-m", "gammaface", "run", str(REPO / "jobs" / "smoke.yaml"), "--stages",
           "prepare", "--workdir", str(tmp_path / "w")]
    with open(tmp_path / "err", "w") as e:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=e, cwd=REPO)
        me, head = psutil.Process(proc.pid), []
        deadline = time.time() + 120
        while not head and proc.poll() is None and time.time() < deadline:
            head = [c for c in me.children(recursive=True) if c.name() == spawned]
            time.sleep(0.05)
        assert head, "the run never started a Ray head"
        proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        proc.wait(timeout=60)
        took = time.time() - signalled
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "stopped by SIGTERM; rerun the same command to resume"
    assert took < 15, f"the stop took {took:.0f} s"
    gone, alive = psutil.wait_procs(head, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive


def test_mlflow_writes_that_fail_on_a_full_disk_print_no_traceback(tmp_path):
    """The MLflow store inside the workdir on a tmpfs that fills during a run: its system-
    metrics thread fails to write every sample, and MLflow would log each failure with a
    traceback ahead of the run's one sentence."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    why = _mount_rights(mount)
    if why:
        pytest.skip(why)
    run = f"""
import subprocess, time
from gammaface import config
from gammaface.run import tracking
from gammaface.storage.store import Store
work = "{mount}/w"
cfg = config.load("{REPO / 'jobs' / 'smoke.yaml'}", {{"workdir": work, "mlflow.system_metrics": 0.2}})
try:
    with tracking.pipeline_run(cfg, Store(work), ["prepare"]):
        subprocess.run(["dd", "if=/dev/zero", "of={mount}/rest", "bs=4k"], capture_output=True)
        time.sleep(2)  # ten samples that cannot be written
        raise OSError(28, "No space left on device")  # as the stage's next write would
except OSError:
    print("done")  # the pipeline says this in one sentence (errors.explain)
"""
    (tmp_path / "run.py").write_text(run)
    script = f"mount -t tmpfs -o size=2m tmpfs {mount}\n{sys.executable} {tmp_path / 'run.py'}\n"
    done = subprocess.run([*_UNSHARE, "bash", "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert "done" in done.stdout, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "disk is full" not in done.stderr, done.stderr[-3000:]


@pytest.mark.e2e
def test_a_full_disk_ends_in_one_sentence_and_the_run_resumes_when_space_is_back(tmp_path):
    """The workdir on a tmpfs of 4 MiB, a ballast file leaving 300 KiB: prepare's Ray tasks run
    out of space while they write images. Once the ballast is gone the same command resumes and
    completes. (The MLflow store lies outside, so its record of the failure can be read.)"""
    mount, logs = tmp_path / "mnt", tmp_path / "logs"
    mount.mkdir()
    logs.mkdir()
    why = _mount_rights(mount)
    if why:
        pytest.skip(why)
    sets = " ".join(f"--set {s}" for s in [*TOY_SETS, f"mlflow.tracking_uri=sqlite:///{logs}/mlflow.db"])
    run = (f"{sys.executable} -m gammaface run {REPO / 'jobs' / 'smoke.yaml'} --workdir {mount}/w "
           f"{sets} --stages prepare")
    script = f"""
mount -t tmpfs -o size=4m tmpfs {mount}
avail=$(df -k --output=avail {mount} | tail -1)
fallocate -l $(( (avail - 300) * 1024 )) {mount}/ballast
{run} > {logs}/1.out 2> {logs}/1.err; echo $? > {logs}/1.rc
rm {mount}/ballast
{run} > {logs}/2.out 2> {logs}/2.err; echo $? > {logs}/2.rc
"""
    subprocess.run([*_UNSHARE, "bash", "-c", script], cwd=REPO, check=True, timeout=600)
    rc = {i: int((logs / f"{i}.rc").read_text()) for i in (1, 2)}
    err = (logs / "1.err").read_text().strip().splitlines()
    assert rc[1] == 2, err[-30:]
    _one_sentence(err[-1], f"{mount}/w", "the disk is full; free space and rerun")
    # what Ray's workers print is theirs; this process adds no traceback of its own
    assert all("pid=" in line for line in err if "Traceback" in line), err
    assert rc[2] == 0, (logs / "2.err").read_text()[-2000:]
    assert "[prepare] done" in (logs / "2.out").read_text()
    statuses = sorted(_statuses(logs / "mlflow.db").values())
    assert statuses == ["FAILED", "FAILED", "FINISHED", "FINISHED"]  # pipeline and stage, twice
