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
