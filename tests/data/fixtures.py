"""Writers of small datasets in the exact on-disk formats of FFHQ and FairFace."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, seed: int = 0, size: int = 8, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def ffhq_face(age=30.0, gender="female", smile=0.9, glasses="NoGlasses",
              hair=(("brown", 0.9), ("black", 0.3)), bald=0.05) -> dict:
    """One face entry as the ffhq-features-dataset writes it (Azure Face API layout)."""
    return {
        "faceId": "00000000-0000-0000-0000-000000000000",
        "faceRectangle": {"top": 10, "left": 10, "width": 100, "height": 100},
        "faceAttributes": {
            "smile": smile, "gender": gender, "age": age, "glasses": glasses,
            "headPose": {"pitch": 0.0, "roll": 0.0, "yaw": 0.0},
            "facialHair": {"moustache": 0.0, "beard": 0.0, "sideburns": 0.0},
            "emotion": {"happiness": smile, "neutral": 1 - smile},
            "hair": {"bald": bald, "invisible": not hair,
                     "hairColor": [{"color": c, "confidence": p} for c, p in hair]},
            "makeup": {"eyeMakeup": False, "lipMakeup": False},
            "accessories": [], "occlusion": {"foreheadOccluded": False},
        },
    }


def write_ffhq(root: Path, faces: dict[int, object], variant: str = "thumbnails128x128") -> tuple[Path, Path]:
    """`faces[index]` is the JSON value of that index's file (a list of faces, or raw text)."""
    images, features = root / "ffhq", root / "ffhq-features"
    (features / "json").mkdir(parents=True, exist_ok=True)
    for index, value in faces.items():
        text = value if isinstance(value, str) else json.dumps(value)
        (features / "json" / f"{index:05d}.json").write_text(text)
        write_png(images / variant / f"{index // 1000 * 1000:05d}" / f"{index:05d}.png", seed=index)
    (images / variant).mkdir(parents=True, exist_ok=True)
    return images, features


FAIRFACE_HEADER = ["file", "age", "gender", "race", "service_test"]


def write_fairface(root: Path, train_rows: list[list[str]], val_rows: list[list[str]],
                   header: list[str] = FAIRFACE_HEADER, make_images: bool = True) -> tuple[Path, Path]:
    labels, images = root / "labels", root / "fairface"
    labels.mkdir(parents=True, exist_ok=True)
    for name, rows in (("fairface_label_train.csv", train_rows), ("fairface_label_val.csv", val_rows)):
        with (labels / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        if make_images:
            for i, row in enumerate(rows):
                write_png(images / row[0], seed=i, fmt="JPEG")
    images.mkdir(parents=True, exist_ok=True)
    return labels, images


# --- whole datasets in the real formats, with faces a classifier can learn ------------------------
# The faces are SynthFaces renders of the labels each file states, so the attribute classifiers
# and the DDPM have something real to fit; only the label files' formats are FFHQ's and FairFace's.

_FFHQ_AGE = {"young": 27.0, "old": 58.0}
_FFHQ_SMILE = {"no": 0.08, "yes": 0.93}
_FFHQ_GLASSES = {"no": "NoGlasses", "yes": "ReadingGlasses"}
_FFHQ_HAIR = {"black": "black", "brown": "blond", "other": "gray"}
_FAIRFACE_AGE = {"young": "20-29", "old": "60-69"}
_FAIRFACE_GENDER = {"female": "Female", "male": "Male"}
_FAIRFACE_RACE = {"white": "White", "black": "Black", "other": "East Asian"}


def _faces(n: int, seed: int, size: int):
    """(labels, image) pairs from SynthFaces' biased default joint distribution."""
    from gammaface.data.synthfaces import sample_labels
    from gammaface.data.synthfaces_render import render_face

    rows = sample_labels(n, seed).to_dict("records")
    for i, row in enumerate(rows):
        yield row, render_face(row, size, np.random.default_rng([seed, i]))


def write_ffhq_dataset(root: Path, n_train: int = 160, n_test: int = 40, size: int = 16,
                       seed: int = 0) -> tuple[Path, Path]:
    """An FFHQ tree: `ffhq/thumbnails128x128/NN000/NNNNN.png` (with an `images1024x1024/`
    beside it), `ffhq-features/json/NNNNN.json` in the ffhq-features-dataset layout. Indices
    0.. are train, 60000.. test. It holds every case the real files have: faces the Face API did
    not find (`[]`), hidden hair (no colour, low bald score), bald heads, and colour ties across
    hair groups. Returns (images root, features root)."""
    images, features = root / "ffhq", root / "ffhq-features"
    (features / "json").mkdir(parents=True, exist_ok=True)
    (images / "images1024x1024").mkdir(parents=True, exist_ok=True)
    indices = list(range(n_train)) + list(range(60000, 60000 + n_test))
    for i, (index, (labels, face)) in enumerate(zip(indices, _faces(len(indices), seed, size))):
        png = images / "thumbnails128x128" / f"{index // 1000 * 1000:05d}" / f"{index:05d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(png)
        hair = [(_FFHQ_HAIR[labels["hair"]], 0.95), ("brown", 0.2)]
        bald = 0.05
        if i % 11 == 3:
            hair = []  # hidden hair: no colour and a low bald score
        elif i % 11 == 7:
            hair, bald = [], 0.9  # bald
        elif i % 11 == 9:
            hair = [("black", 0.6), ("red", 0.6)]  # a tie across groups
        entry = ffhq_face(age=_FFHQ_AGE[labels["age"]], gender=labels["gender"],
                          smile=_FFHQ_SMILE[labels["smile"]],
                          glasses=_FFHQ_GLASSES[labels["glasses"]], hair=hair, bald=bald)
        faces = [] if i % 23 == 5 else [entry]  # no face found in this image
        (features / "json" / f"{index:05d}.json").write_text(json.dumps(faces))
    return images, features


def write_fairface_dataset(root: Path, n_train: int = 160, n_val: int = 40, size: int = 16,
                           seed: int = 0) -> tuple[Path, Path]:
    """FairFace's layout: `fairface_label_train.csv` and `fairface_label_val.csv` with the real
    header, `file` values `train/N.jpg` and `val/N.jpg` under the images folder (JPEG, as
    released). Returns (labels folder, images folder)."""
    labels_dir, images = root / "fairface-labels", root / "fairface"
    labels_dir.mkdir(parents=True, exist_ok=True)
    faces = _faces(n_train + n_val, seed, size)
    for name, split, count in (("fairface_label_train.csv", "train", n_train),
                               ("fairface_label_val.csv", "val", n_val)):
        with (labels_dir / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(FAIRFACE_HEADER)
            for i in range(count):
                labels, face = next(faces)
                rel = f"{split}/{i + 1}.jpg"
                (images / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(face).save(images / rel, format="JPEG", quality=95)
                w.writerow([rel, _FAIRFACE_AGE[labels["age"]], _FAIRFACE_GENDER[labels["gender"]],
                            _FAIRFACE_RACE[labels["race"]], "True" if i % 2 else "False"])
    return labels_dir, images
