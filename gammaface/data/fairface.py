"""FairFace label CSVs -> canonical manifest.

`fairface_label_train.csv` becomes the train split and `fairface_label_val.csv` the test split;
`path` is the CSV's `file` value, relative to the images folder.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import pandas as pd

from gammaface.data import manifest, registry
from gammaface.common.images import check_images
from gammaface.common.errors import UserError
from gammaface.storage.store import Store

LABEL_FILES = {"fairface_label_train.csv": "train", "fairface_label_val.csv": "test"}
_BOOL = {"True": True, "False": False, "true": True, "false": False}


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    where: list[str] = []
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise glue itself to `file`
        with path.open(newline="", encoding="utf-8-sig") as fh:
            _read_rows(path, csv.DictReader(fh), rows, where)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}).") from None
    if not rows:
        raise UserError(f"{path} has a header but no rows.")
    return rows, where


def _read_rows(path: Path, reader: csv.DictReader, rows: list[dict], where: list[str]) -> None:
    header = reader.fieldnames or []
    missing = [c for c in registry.FAIRFACE_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path}: column {missing[0]!r} is missing from the header.")
    for line_no, raw in enumerate(reader, start=2):
        loc = f"{path}, line {line_no}"
        if None in raw or any(raw[c] is None for c in registry.FAIRFACE_COLUMNS):
            raise UserError(f"{loc}: the row does not have {len(header)} fields.")
        row = {"path": raw["file"]}
        if not row["path"]:
            raise UserError(f"{loc}: file is empty.")
        parts = PurePosixPath(row["path"]).parts
        if row["path"].startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise UserError(f"{loc}: file {row['path']!r} must be a path relative to the "
                            "images folder, inside it.")
        for col, table in registry.FAIRFACE_BINNING.items():
            if raw[col] not in table:
                raise UserError(f"{loc}: {col} = {raw[col]!r} is not a FairFace {col} value.")
            row[col] = table[raw[col]]
        if raw["service_test"] not in _BOOL:
            raise UserError(f"{loc}: service_test = {raw['service_test']!r} is not True or False.")
        row["service_test"] = _BOOL[raw["service_test"]]
        rows.append(row)
        where.append(loc)


# how the user named each input: the command line's flags, or the config's keys
CLI_NAMES = {"labels": "--labels", "images": "--images"}
CONFIG_NAMES = {"labels": "data.fairface.labels", "images": "data.fairface.images"}


def check_folders(labels: Path, images: Path, names: dict[str, str] = CLI_NAMES) -> None:
    """The folders `load` reads exist and the label files are there: checked before anything
    is written (a pipeline checks them before it marks any stage incomplete)."""
    for folder, what in ((labels, names["labels"]), (images, names["images"])):
        if not folder.is_dir():
            raise UserError(f"{what}: folder {folder} does not exist.")
    for name in LABEL_FILES:
        if not (labels / name).is_file():
            raise UserError(f"{names['labels']}: {labels} holds no {name}.")


def load(labels: Path, images: Path, decode: bool = True,
         names: dict[str, str] = CLI_NAMES) -> pd.DataFrame:
    check_folders(labels, images, names)
    frames, where = [], []
    for name, split in LABEL_FILES.items():
        path = labels / name
        rows, locs = _read_csv(path)
        frame = pd.DataFrame(rows, columns=["path", *registry.FAIRFACE_BINNING, "service_test"])
        frame["split"] = split
        frames.append(frame)
        where.extend(locs)
    df = pd.concat(frames, ignore_index=True)
    for name in registry.ATTRIBUTE_NAMES:
        if name not in df.columns:
            df[name] = None  # FairFace has no smile, glasses or hair labels
    df["service_test"] = df["service_test"].astype(bool)
    check_images(images, list(df["path"]), where, decode=decode)
    return df


def prepare(labels: Path, images: Path, out_dir: Path, decode: bool = True,
            names: dict[str, str] = CLI_NAMES) -> pd.DataFrame:
    df = load(labels, images, decode, names)
    return manifest.write(df, Store(out_dir), manifest.image_root_for(out_dir, images))
