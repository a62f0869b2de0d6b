import subprocess
import sys

import pytest

from gammaface.data import ffhq, manifest
from gammaface.common.errors import UserError
from tests.data.fixtures import ffhq_face, write_ffhq, write_png


def _faces():
    return {
        0: [ffhq_face(age=25, gender="female", smile=0.9, glasses="NoGlasses",
                      hair=[("blond", 0.95), ("brown", 0.4)])],
        1: [ffhq_face(age=40, gender="male", smile=0.5, glasses="ReadingGlasses",
                      hair=[("black", 0.99)]),
            ffhq_face(age=5, gender="female", smile=1.0)],  # only the first face counts
        1500: [],  # no face found: the row stays, every attribute null
        2001: [ffhq_face(age=70, gender="male", smile=0.1, glasses="Sunglasses", hair=[], bald=0.97)],
        60000: [ffhq_face(age=39.5, gender="female", smile=0.6, glasses="SwimmingGoggles",
                          hair=[("red", 0.6), ("brown", 0.6)])],
    }


def test_manifest_rows_paths_splits_and_binning(tmp_path):
    images, features = write_ffhq(tmp_path, _faces())
    out = tmp_path / "out"
    ffhq.prepare(images, features, out)
    df, root = manifest.read(out / manifest.MANIFEST_FILE)
    assert root == str(images.resolve())
    rows = {p: r for p, r in zip(df["path"], df.to_dict("records"))}
    assert set(rows) == {"thumbnails128x128/00000/00000.png", "thumbnails128x128/00000/00001.png",
                         "thumbnails128x128/01000/01500.png", "thumbnails128x128/02000/02001.png",
                         "thumbnails128x128/60000/60000.png"}
    r0 = rows["thumbnails128x128/00000/00000.png"]
    assert (r0["split"], r0["age"], r0["gender"], r0["smile"], r0["glasses"], r0["hair"]) == \
        ("train", "young", "female", "yes", "no", "brown")
    r1 = rows["thumbnails128x128/00000/00001.png"]
    assert (r1["age"], r1["gender"], r1["smile"], r1["glasses"], r1["hair"]) == \
        ("old", "male", "no", "yes", "black")
    r_empty = rows["thumbnails128x128/01000/01500.png"]
    assert all(r_empty[a] is None or r_empty[a] != r_empty[a] for a in
               ("age", "gender", "race", "smile", "glasses", "hair"))
    assert df["race"].isna().all()
    bald = rows["thumbnails128x128/02000/02001.png"]
    assert (bald["hair"], bald["glasses"], bald["age"]) == ("other", "yes", "old")
    last = rows["thumbnails128x128/60000/60000.png"]
    assert last["split"] == "test" and last["age"] == "young" and last["smile"] == "yes"
    assert last["hair"] is None or last["hair"] != last["hair"]  # tie across groups


def test_the_variant_folder_itself_is_accepted_as_the_images_folder(tmp_path):
    """The shipped configs (and FFHQ's own download script) name thumbnails128x128/ itself."""
    images, features = write_ffhq(tmp_path, _faces())
    out = tmp_path / "out"
    ffhq.prepare(images / "thumbnails128x128", features, out)
    df, root = manifest.read(out / manifest.MANIFEST_FILE)
    assert root == str(images.resolve())
    assert "thumbnails128x128/00000/00000.png" in set(df["path"])


def test_full_resolution_variant_paths(tmp_path):
    images, features = write_ffhq(tmp_path, {3130: [ffhq_face()]}, variant="images1024x1024")
    df = ffhq.load(images, features, variant="images1024x1024")
    assert list(df["path"]) == ["images1024x1024/03000/03130.png"]


@pytest.mark.parametrize("broken, fragment", [
    ('[{"faceAttributes": ', "malformed JSON at line 1"),
    ('{"faceAttributes": {}}', "expected a list of faces"),
    ([{"faceAttributes": {"age": 30}}], "key 'hair' is missing"),
    ([ffhq_face(gender="robot")], "gender 'robot'"),
    ([ffhq_face(glasses="Monocle")], "glasses 'Monocle'"),
    ([ffhq_face(hair=[("green", 0.9)])], "hair colour 'green'"),
    ([ffhq_face(age="thirty")], "age = 'thirty' is not a number"),
])
def test_bad_json_is_refused_naming_the_file(tmp_path, broken, fragment):
    faces = _faces()
    faces[7] = broken
    images, features = write_ffhq(tmp_path, faces)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        ffhq.prepare(images, features, out)
    assert fragment in str(err.value) and "00007.json" in str(err.value)
    assert not (out / manifest.MANIFEST_FILE).exists()


def test_missing_and_broken_images_are_refused(tmp_path):
    images, features = write_ffhq(tmp_path, _faces())
    (images / "thumbnails128x128/00000/00001.png").unlink()
    with pytest.raises(UserError, match=r"00001\.json: image .*00001\.png is missing"):
        ffhq.load(images, features)
    write_png(images / "thumbnails128x128/00000/00001.png")
    (images / "thumbnails128x128/00000/00000.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match=r"00000\.png does not decode"):
        ffhq.load(images, features)
    # only existence is checked when decoding is switched off
    assert len(ffhq.load(images, features, decode=False)) == 5


def test_cli_exit_2_and_no_manifest_on_bad_input(tmp_path):
    faces = _faces()
    faces[9] = [ffhq_face(gender="unknown")]
    images, features = write_ffhq(tmp_path, faces)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gammaface", "data", "ffhq", "--images", str(images),
                           "--features", str(features), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "00009.json" in proc.stderr and "'unknown'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / manifest.MANIFEST_FILE).exists()


def test_cli_writes_manifest_and_summary(tmp_path):
    images, features = write_ffhq(tmp_path, _faces())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gammaface", "data", "ffhq", "--images", str(images),
                           "--features", str(features), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "5 rows: train 4, val 0, test 1" in proc.stdout
    assert "race     white 0, black 0, other 0, null 5" in proc.stdout
    assert (out / manifest.MANIFEST_FILE).exists()
