"""Bad input, table by table: each case gets one sentence naming the culprit, exit 2 from the
command line, and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gammaface import config
from gammaface.data import fairface, ffhq
from gammaface.data import registry
from gammaface.data.synthfaces_spec import Spec
from gammaface.errors import UserError
from tests.data.fixtures import ffhq_face, write_fairface, write_ffhq

REPO = Path(__file__).resolve().parents[1]
SMOKE = (REPO / "jobs" / "smoke.yaml").read_text()


def _one_sentence(msg: str, *fragments: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg, msg
    for f in fragments:
        assert f in msg, msg


# (config file bytes, --set arguments, what the sentence must name)
CONFIG_CASES = {
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
    "ratio twice": (b"downstream:\n  ratios: [0.5, 0.5]\n", [], ["a ratio is named twice"]),
    "protected twice": (b"downstream:\n  protected: [age, age]\n", [], ["named twice"]),
    "t* beyond the schedule": (SMOKE.encode(), ["harvest.t_star=5000"],
                               ["harvest.t_star = 5000 must lie between 1 and 999"]),
    "downstream method not generated": (SMOKE.encode(), ["generate.methods=[gmm]"],
                                        ["downstream.methods names unconditional",
                                         "generate.methods does not make"]),
    "forced K above the latents": (SMOKE.encode(), ["gmm.k=500"], ["gmm.k = 500 is more than"]),
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


@pytest.mark.parametrize("value", [float("nan"), 1.5, -0.1])
def test_a_synthfaces_probability_must_lie_in_0_1(value):
    raw = {a: {c: 1 / len(registry.get(a).classes) for c in registry.get(a).classes}
           for a in registry.ATTRIBUTE_NAMES}
    raw["age"] = {"young": value, "old": 0.5}
    with pytest.raises(UserError) as err:
        Spec(raw, source="spec.yaml")
    _one_sentence(str(err.value), "spec.yaml", "age.young", "is not a probability")


def test_a_setting_refused_at_load_leaves_completed_stages_alone(tmp_path, ray_local):
    from gammaface import pipeline

    cfg = config.load(REPO / "jobs" / "smoke.yaml", {"workdir": str(tmp_path / "work")})
    pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    record = tmp_path / "work" / "data" / "synthfaces" / "stage.json"
    before = record.read_bytes()
    for bad in ("harvest.t_star=5000", "generate.methods=[gmm]"):
        out = subprocess.run([sys.executable, "-m", "gammaface", "run", str(REPO / "jobs" / "smoke.yaml"),
                              "--workdir", str(tmp_path / "work"), "--set", bad],
                             capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert record.read_bytes() == before


def test_compare_on_a_workdir_without_a_store_creates_nothing(tmp_path):
    missing = tmp_path / "no-such-run"
    out = subprocess.run([sys.executable, "-m", "gammaface", "compare", str(REPO / "jobs" / "smoke.yaml"),
                          "--workdir", str(missing)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    _one_sentence(out.stderr.strip(), str(missing), "holds no MLflow store")
    assert not missing.exists()
