import subprocess
import sys

import pytest

from gammaface.data import fairface, manifest
from gammaface.common.errors import UserError
from tests.data.fixtures import write_fairface

TRAIN = [
    ["train/1.jpg", "50-59", "Male", "East Asian", "True"],
    ["train/2.jpg", "60-69", "Female", "White", "False"],
    ["train/3.jpg", "more than 70", "Male", "Black", "True"],
    ["train/4.jpg", "0-2", "Female", "Latino_Hispanic", "False"],
    ["train/5.jpg", "70+", "Female", "Indian", "False"],
    ["train/6.jpg", "20-29", "Male", "Southeast Asian", "True"],
    ["train/7.jpg", "30-39", "Male", "Middle Eastern", "False"],
]
VAL = [["val/1.jpg", "3-9", "Female", "Black", "True"]]


def test_manifest_from_label_csvs(tmp_path):
    labels, images = write_fairface(tmp_path, TRAIN, VAL)
    out = tmp_path / "out"
    fairface.prepare(labels, images, out)
    df, root = manifest.read(out / manifest.MANIFEST_FILE)
    assert root == str(images.resolve())
    assert list(df["path"]) == [r[0] for r in TRAIN + VAL]
    assert list(df["split"]) == ["train"] * 7 + ["test"]
    assert list(df["age"]) == ["young", "old", "old", "young", "old", "young", "young", "young"]
    assert list(df["gender"]) == ["male", "female", "male", "female", "female", "male", "male", "female"]
    assert list(df["race"]) == ["other", "white", "black", "other", "other", "other", "other", "black"]
    assert list(df["service_test"]) == [True, False, True, False, False, True, False, True]
    for col in ("smile", "glasses", "hair"):
        assert df[col].isna().all()


@pytest.mark.parametrize("row, fragment", [
    (["train/9.jpg", "80-89", "Male", "White", "True"], "age = '80-89'"),
    (["train/9.jpg", "20-29", "male", "White", "True"], "gender = 'male'"),
    (["train/9.jpg", "20-29", "Male", "Asian", "True"], "race = 'Asian'"),
    (["train/9.jpg", "20-29", "Male", "White", "yes"], "service_test = 'yes'"),
    (["train/9.jpg", "20-29", "Male"], "does not have 5 fields"),
])
def test_bad_values_name_file_and_line(tmp_path, row, fragment):
    labels, images = write_fairface(tmp_path, TRAIN + [row], VAL, make_images=False)
    with pytest.raises(UserError) as err:
        fairface.load(labels, images)
    msg = str(err.value)
    assert "fairface_label_train.csv, line 9" in msg and fragment in msg


def test_missing_column_and_missing_file(tmp_path):
    header = ["file", "age", "gender", "service_test"]
    labels, images = write_fairface(tmp_path, [r[:3] + r[4:] for r in TRAIN], [], header=header,
                                    make_images=False)
    with pytest.raises(UserError, match="column 'race' is missing"):
        fairface.load(labels, images)
    (labels / "fairface_label_val.csv").unlink()
    (labels / "fairface_label_train.csv").unlink()
    with pytest.raises(UserError, match="holds no fairface_label_train.csv"):
        fairface.load(labels, images)


def test_missing_or_undecodable_image(tmp_path):
    labels, images = write_fairface(tmp_path, TRAIN, VAL)
    (images / "train/3.jpg").unlink()
    with pytest.raises(UserError, match=r"fairface_label_train.csv, line 4: image .*3\.jpg is missing"):
        fairface.load(labels, images)
    (images / "train/3.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match=r"line 4: image .*3\.jpg does not decode"):
        fairface.load(labels, images)


def test_cli_bad_input_exit_2_without_manifest(tmp_path):
    labels, images = write_fairface(tmp_path, TRAIN + [["train/9.jpg", "20-29", "X", "White", "True"]],
                                    VAL)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gammaface", "data", "fairface", "--labels",
                           str(labels), "--images", str(images), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "line 9" in proc.stderr and "gender = 'X'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / manifest.MANIFEST_FILE).exists()
