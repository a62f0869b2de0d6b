"""FFHQ with the ffhq-features-dataset attribute JSON files -> canonical manifest.

Rows come from the JSON files (`features/json/NNNNN.json`, one per image); each row's image must
exist under `images/<variant>/NN000/NNNNN.png`. Index < 60000 is train, the rest test (FFHQ's own
validation range).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from gammaface.data import manifest, registry
from gammaface.common.images import check_images
from gammaface.common.errors import UserError
from gammaface.storage.store import Store

VARIANTS = ("images1024x1024", "thumbnails128x128")
FIRST_TEST_INDEX = 60000
_JSON_NAME = re.compile(r"^(\d{5})\.json$")


def image_path(variant: str, index: int) -> str:
    return f"{variant}/{index // 1000 * 1000:05d}/{index:05d}.png"


def _json_dir(features: Path) -> Path:
    sub = features / "json"
    return sub if sub.is_dir() else features


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{where}: key {key!r} is missing.")
    return obj[key]


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: {what} = {value!r} is not a number.")
    if not math.isfinite(value):  # json reads NaN and Infinity; a NaN age would bin as old
        raise UserError(f"{where}: {what} = {value!r} is not a finite number.")
    return float(value)


def parse_faces(faces: Any, where: str) -> dict[str, str | None]:
    """Binned attributes of the first face in one JSON file's list (all null for `[]`)."""
    if not isinstance(faces, list):
        raise UserError(f"{where}: expected a list of faces, got {type(faces).__name__}.")
    if not faces:
        return {name: None for name in registry.ATTRIBUTE_NAMES}
    attrs = _field(faces[0], "faceAttributes", where)
    hair = _field(attrs, "hair", where)
    colours_raw = _field(hair, "hairColor", where) or []
    if not isinstance(colours_raw, list):
        raise UserError(f"{where}: hair.hairColor = {colours_raw!r} is not a list.")
    colours = [(str(_field(c, "color", where)),
                _number(_field(c, "confidence", where), "hairColor confidence", where))
               for c in colours_raw]
    bald = hair.get("bald")
    try:
        return {
            "age": registry.ffhq_age(_number(_field(attrs, "age", where), "age", where)),
            "gender": registry.ffhq_gender(_field(attrs, "gender", where)),
            "race": None,  # FFHQ's features carry no race label
            "smile": registry.ffhq_smile(_number(_field(attrs, "smile", where), "smile", where)),
            "glasses": registry.ffhq_glasses(_field(attrs, "glasses", where)),
            "hair": registry.ffhq_hair(colours, None if bald is None else
                                       _number(bald, "hair.bald", where)),
        }
    except registry.BinningError as exc:
        raise UserError(f"{where}: {exc}.") from None


# how the user named each input: the command line's flags, or the config's keys
CLI_NAMES = {"images": "--images", "features": "--features", "variant": "--variant"}
CONFIG_NAMES = {"images": "data.ffhq.images", "features": "data.ffhq.features",
                "variant": "data.ffhq.variant"}


def load(images: Path, features: Path, variant: str = "thumbnails128x128",
         decode: bool = True, names: dict[str, str] = CLI_NAMES) -> pd.DataFrame:
    """The manifest rows; raises UserError naming the file (and the flag or config key that
    named its folder, `names`) for any bad input."""
    check_folders(images, features, variant, names)
    images = image_root(images, variant)
    json_dir = _json_dir(features)
    files = sorted(p for p in json_dir.iterdir() if _JSON_NAME.match(p.name))
    if not files:
        raise UserError(f"{names['features']}: {json_dir} holds no NNNNN.json attribute files.")
    rows, where = [], []
    for f in files:
        index = int(f.stem)
        try:
            faces = json.loads(f.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise UserError(f"{f} is not UTF-8 text (byte {exc.start}).") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{f}: malformed JSON at line {exc.lineno}: {exc.msg}.") from None
        rows.append({"path": image_path(variant, index),
                     "split": "train" if index < FIRST_TEST_INDEX else "test",
                     **parse_faces(faces, str(f))})
        where.append(str(f))
    df = pd.DataFrame(rows)
    check_images(images, list(df["path"]), where, decode=decode)
    return df


def check_folders(images: Path, features: Path, variant: str = "thumbnails128x128",
                  names: dict[str, str] = CLI_NAMES) -> None:
    """The folders `load` reads exist and hold the variant: checked before anything is written
    (a pipeline checks them before it marks any stage incomplete)."""
    if variant not in VARIANTS:
        raise UserError(f"{names['variant']}: FFHQ variant {variant!r} is not one of "
                        f"{', '.join(VARIANTS)}.")
    for folder, what in ((images, names["images"]), (features, names["features"])):
        if not folder.is_dir():
            raise UserError(f"{what}: folder {folder} does not exist.")
    root = image_root(images, variant)
    if not (root / variant).is_dir():
        raise UserError(f"{names['images']}: {root} holds no {variant}/ folder (choose the "
                        f"variant with {names['variant']}).")


def image_root(images: Path, variant: str) -> Path:
    """The folder that holds `<variant>/`: `images` itself, or its parent when `images` is the
    variant folder."""
    if images.name == variant and not (images / variant).is_dir():
        return images.parent
    return images


def prepare(images: Path, features: Path, out_dir: Path, variant: str = "thumbnails128x128",
            decode: bool = True, names: dict[str, str] = CLI_NAMES) -> pd.DataFrame:
    df = load(images, features, variant, decode, names)
    return manifest.write(df, Store(out_dir),
                          manifest.image_root_for(out_dir, image_root(images, variant)))
