import subprocess
import sys

import pytest

from gammaface import config
from gammaface.common.errors import UserError


def test_defaults_are_the_papers_settings():
    cfg = config.from_dict({})
    assert (cfg.gmm.k_min, cfg.gmm.k_max) == (1, 11)
    assert cfg.gmm.k is None
    assert cfg.ddpm.num_train_timesteps == 1000 and cfg.ddpm.beta_schedule == "linear"
    assert cfg.ddpm.learning_rate == 1e-4
    assert cfg.downstream.ratios == [0.0, 0.3, 0.5, 0.7, 1.0]
    assert cfg.downstream.n_per_class == [5000]
    assert cfg.classifiers.backbone == "resnet101"


@pytest.mark.parametrize("data, fragment", [
    ({"gmm": {"k_mni": 2}}, "unknown key 'gmm.k_mni'"),
    ({"harvest": {"n": "many"}}, "key 'harvest.n' = 'many' is invalid"),
    ({"harvest": {"n": -5}}, "key 'harvest.n' = -5 is invalid"),
    ({"downstream": {"ratios": [0.5, 1.5]}}, "key 'downstream.ratios'"),
    ({"gmm": {"k_min": 5, "k_max": 3}}, "the K range is empty"),
    ({"data": {"synthfaces": {"size": 8}}}, "key 'data.synthfaces.size' = 8"),
    ({"downstream": {"target": "age", "protected": ["age"]}}, "cannot also be a protected"),
    ({"downstream": {"protected": ["shoe_size"]}}, "unknown attribute 'shoe_size'"),
    ({"data": {"dataset": "ffhq"}}, "needs data.ffhq.images"),
    ({"gmm": {"space": "features"}, "generate": {"draw": "resample", "quota": {"draw": "gaussian"}}},
     "needs generate.quota.draw = 'resample'"),
    ({"generate": {"draw": "gaussian", "quota": {"t_start": 400}}},
     "generate.quota.t_start applies to resampled draws only"),
    ({"harvest": {"t_star": 300}, "generate": {"quota": {"draw": "resample", "t_start": 200}}},
     "generate.quota.t_start = 200 must lie between harvest.t_star (300) and 999"),
])
def test_bad_values_name_the_key(data, fragment):
    with pytest.raises(UserError) as err:
        config.from_dict(data, source="x.yaml")
    msg = str(err.value)
    assert fragment in msg
    assert msg.startswith("x.yaml:") and msg.endswith(".") and "\n" not in msg


def test_n_per_class_accepts_one_number_or_a_list():
    assert config.from_dict({"downstream": {"n_per_class": 300}}).downstream.n_per_class == [300]
    assert config.from_dict({"downstream": {"n_per_class": [300, 1000]}}).downstream.n_per_class \
        == [300, 1000]


def test_load_applies_overrides_and_refuses_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("harvest:\n  t_star: 300\n")
    cfg = config.load(path, {"gmm.k": 4})
    assert cfg.harvest.t_star == 300 and cfg.gmm.k == 4
    with pytest.raises(UserError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


def test_section_hash_changes_only_with_its_section():
    a = config.from_dict({})
    b = config.from_dict({"gmm": {"k": 3}})
    assert a.section_hash("harvest") == b.section_hash("harvest")
    assert a.section_hash("gmm") != b.section_hash("gmm")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gammaface", *args], capture_output=True, text=True)


def test_cli_reports_a_bad_config_in_one_line_with_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("gmm:\n  k_min: 0\n")
    proc = _cli("config", "show", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gmm.k_min" in lines[0] and "0" in lines[0]


def test_cli_config_show_prints_resolved_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    proc = _cli("config", "show", str(path), "--set", "gmm.k=4")
    assert proc.returncode == 0, proc.stderr
    shown = config.from_dict(__import__("yaml").safe_load(proc.stdout))
    assert shown.name == "x" and shown.gmm.k == 4 and shown.gmm.k_max == 11


def test_cli_missing_config_file_exits_2():
    proc = _cli("run", "does/not/exist.yaml")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("cmd", [[], ["run"], ["data"], ["data", "synthfaces"], ["data", "ffhq"],
                                 ["data", "fairface"], ["config"], ["config", "show"], ["stages"]])
def test_every_command_has_help(cmd):
    proc = _cli(*cmd, "--help")
    assert proc.returncode == 0 and "usage: gammaface" in proc.stdout


FFHQ = {"dataset": "ffhq", "ffhq": {"images": "/data/ffhq", "features": "/data/ffhq-features"}}
FAIRFACE = {"dataset": "fairface", "fairface": {"labels": "/data/ff", "images": "/data/ff"}}


@pytest.mark.parametrize("data, fragment", [
    ({"data": FFHQ, "classifiers": {"attributes": ["age", "race"]}},
     "classifiers.attributes names race, which dataset 'ffhq' does not label"),
    ({"data": FFHQ, "generate": {"protected": ["race", "gender"]}},
     "generate.protected names race, which dataset 'ffhq' does not label"),
    ({"data": FFHQ, "downstream": {"protected": ["race"]}},
     "downstream.protected names race, which dataset 'ffhq' does not label"),
    ({"data": FAIRFACE}, "downstream.target defaults to 'smile', which dataset 'fairface'"),
    ({"data": FAIRFACE, "downstream": {"target": "glasses", "protected": ["age"]}},
     "downstream.target is 'glasses', which dataset 'fairface' does not label"),
    ({"classifiers": {"attributes": ["age", "gender", "race"]}},
     "downstream.target names smile, which classifiers.attributes (age, gender, race) has no head"),
    ({"classifiers": {"attributes": ["smile", "age"]}},
     "downstream.protected names gender, which classifiers.attributes"),
    ({"classifiers": {"attributes": ["smile", "age", "gender"]}},
     "generate.protected names race, which classifiers.attributes"),
    ({"generate": {"methods": ["quota_adaptive"], "quota": {"cells": ["hair", "age"]}},
      "classifiers": {"attributes": ["smile", "age", "gender", "race"]},
      "downstream": {"methods": ["baseline"]}},
     "generate.quota.cells names hair, which the classifiers are not trained for"),
    ({"generate": {"methods": ["quota_mixture"], "quota": {"shares": {"young:woman:white": 1}}},
      "downstream": {"methods": ["baseline"]}},
     "generate.quota.shares names the cell 'young:woman:white', which is not a cell of age:gender:race"),
    ({"generate": {"quota": {"shares": {"young:female:white": 0}}}},
     "name at least one cell with a positive share"),
    ({"judge": {"seed": 0}}, "judge.seed = 0 equals data.synthfaces.seed"),
])
def test_attributes_the_dataset_or_the_labeller_lacks_are_refused_naming_the_key(data, fragment):
    with pytest.raises(UserError) as err:
        config.from_dict(data, source="x.yaml")
    msg = str(err.value)
    assert fragment in msg, msg
    assert msg.startswith("x.yaml:") and msg.endswith(".") and "\n" not in msg


def test_defaults_drop_what_the_dataset_does_not_label_and_say_so():
    cfg = config.from_dict({"data": FFHQ})
    assert "race" not in cfg.classifiers.attributes
    assert cfg.generate.protected == ["age", "gender"]
    assert any("classifiers.attributes" in n and "race" in n for n in cfg.notes)
    assert any("generate.protected" in n for n in cfg.notes)
    # SynthFaces labels everything: nothing dropped, nothing said
    assert config.from_dict({}).notes == []
    fair = config.from_dict({"data": FAIRFACE, "downstream": {"target": "gender",
                                                              "protected": ["race"]}})
    assert fair.classifiers.attributes == ["age", "gender", "race"]


def test_config_show_prints_what_the_defaults_dropped(tmp_path):
    path = tmp_path / "ffhq.yaml"
    path.write_text("data:\n  dataset: ffhq\n  ffhq:\n    images: /d/ffhq\n    features: /d/json\n")
    out = subprocess.run([sys.executable, "-m", "gammaface", "config", "show", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "# note: classifiers.attributes: dataset 'ffhq' has no race labels" in out.stdout
