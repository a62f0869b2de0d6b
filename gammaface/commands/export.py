"""A generated set as a dataset to hand over: a Hugging Face `imagefolder` (the images and a
`metadata.jsonl` with every label, its confidence, the component and the seed) and a dataset
card (README.md) that says how the set was made, what it holds per cell, how balanced an
independent judge finds it, how new its faces are, and the licence of the source data.

The folder is written under a temporary name and renamed into place when whole. Every file it
hands over is checked against what its stage recorded (size and sha256): an image damaged or
swapped since the stage completed is named, and nothing is handed over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from gammaface.run import layout, stage
from gammaface.classifiers.labels import conf_column
from gammaface.config import Config
from gammaface.data import manifest
from gammaface.data.cells import cell_codes, cells
from gammaface.common.errors import UserError
from gammaface.generate import methods as generation
from gammaface.generate.methods import quota_attributes
from gammaface.latents.store import META_FILE
from gammaface.stages import folder as stage_folder
from gammaface.storage.store import TMP_MARK, Store

SPLIT = "train"
COPY_WARNING = 0.05  # near-copy share above which the card says the faces are not new (real: 0.01)
METADATA = "metadata.jsonl"
CARD = "README.md"
_READS = ("prepare", "harvest", "generate", "pseudo_label", "audit")  # the stages a card draws on
# The terms each source dataset is distributed under; a generated set derives from it.
LICENCES = {
    "synthfaces": ("apache-2.0", "SynthFaces is rendered procedurally by gammaface (Apache-2.0); "
                   "it holds no real person's face."),
    "ffhq": ("cc-by-nc-sa-4.0", "FFHQ (NVIDIA) is distributed under CC BY-NC-SA 4.0: no "
             "commercial use, share alike; its images carry their own Flickr licences."),
    "fairface": ("cc-by-4.0", "FairFace (Kärkkäinen and Joo) is distributed under CC BY 4.0."),
}


def _completed(workdir: Store, cfg: Config, name: str, expected: str) -> Store:
    folder = workdir.sub(stage_folder(name, cfg))
    if stage.completed_hash(folder) != expected:
        raise UserError(f"stage {name!r} has not completed for this config in {workdir.root}; "
                        "run the pipeline first (gammaface run CONFIG).")
    return folder


def _sound(folder: Store, name: str) -> None:
    """Refuse a stage folder whose recorded files changed since it completed (the labels and
    the audit the card is made from; small files, checked whole)."""
    found = stage.damaged(folder)
    if found:
        rel, why = found[0]
        raise UserError(f"stage {name!r}: file {folder.uri(rel)} changed after the stage "
                        f"completed ({why}); rerun the pipeline to redo it before exporting.")


def _copy_checked(src: Path, dest: Path, recorded: dict[str, Any], gen_root: str) -> None:
    """Copy one generated image, checking its bytes against the generate stage's record."""
    rel = os.path.relpath(src, gen_root).replace(os.sep, "/")
    size, sha = recorded.get(rel, (None, None))
    if not src.is_file():
        raise UserError(f"image {src} is missing; rerun the pipeline to redo it before exporting.")
    data = src.read_bytes()
    if sha is None:
        raise UserError(f"image {src} is not among the files the generate stage recorded; "
                        "rerun the pipeline before exporting.")
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise UserError(f"image {src} differs from what the generate stage recorded (its sha256 "
                        "or size changed after the stage completed); rerun the pipeline to redo "
                        "it before exporting.")
    dest.write_bytes(data)


def _cost(quota: dict[str, Any]) -> str:
    """What a quota set cost: renders, and the UNet evaluations they took (recorded by sets
    made since the cost was counted), in all and per kept image."""
    per_render = quota.get("unet_per_render")
    exited = quota.get("exited") or 0
    early = (f" when finished; {exited} of them stopped early, when the labeller read their "
             "first predictions as a full cell," if exited else "")
    text = f"{quota['renders']} renders" + (
        "" if per_render is None else
        f" of {per_render} UNet evaluations each{early} ({quota['unet_evaluations']:,} in all)")
    if quota["renders_per_kept"] is None:
        return text
    text += f", {quota['renders_per_kept']:.2f} renders"
    if per_render is not None:
        text += f" and {quota['unet_per_kept']:.0f} UNet evaluations"
    return text + " per kept image"


def _card(cfg: Config, method: str, hashes: dict[str, str], rows: pd.DataFrame,
          quota: dict[str, Any] | None, audit: list[dict[str, Any]], t_star: Any) -> str:
    licence, licence_text = LICENCES[cfg.data.dataset]
    attrs = quota_attributes(cfg) if generation.in_family(method, "quota") else list(cfg.generate.protected)
    codes = cell_codes(rows, attrs)
    counts = pd.Series(codes[codes >= 0]).value_counts()
    names = [":".join(c) for c in cells(attrs)]
    lines = ["---", f"license: {licence}", "task_categories:", "- image-classification",
             f"pretty_name: gammaface {method} ({cfg.name})", "size_categories:",
             f"- {'n<1K' if len(rows) < 1000 else '1K<n<10K' if len(rows) < 10_000 else '10K<n<100K' if len(rows) < 100_000 else '100K<n<1M'}",
             "---", "", f"# {cfg.name}: the `{method}` set", "",
             f"{len(rows)} face images at {cfg.ddpm_resolution} px generated by gammaface from "
             f"{cfg.data.dataset}, with pseudo-labels for "
             f"{', '.join(a for a in cfg.classifiers.attributes)}.", "", "## How it was made", "",
             f"- config `{cfg.name}`, generate stage hash `{hashes['generate']}`, seed "
             f"{cfg.generate.seed}",
             f"- DDPM: preset `{cfg.ddpm.preset}`, {cfg.ddpm.train_steps} training steps; "
             f"sampled with DDIM, {cfg.generate.steps} steps, eta {cfg.generate.eta}",
             f"- method `{method}`; latents harvested by `{cfg.harvest.source}` at t* = {t_star}, "
             f"mixture in `{cfg.gmm.space}` space, draw "
             f"`{(quota.get('draw') or 'none, plain DDPM samples') if quota else cfg.generate.draw}`"
             + (f", finished from t = {quota['t_start']}" if quota and quota.get("t_start") else ""),
             f"- labeller: {cfg.classifiers.backbone}; labels are its predictions, not ground truth"]
    if quota:
        lines += [f"- quota: {quota['target']} images over the cells of {':'.join(attrs)}, proposal "
                  f"`{quota['proposal']}`, kept at confidence >= {quota['min_confidence']}; "
                  + _cost(quota) + "; "
                  + ("every cell full" if quota["complete"] else f"stopped ({quota['stopped']}) short")]
    lines += ["", f"## Counts per cell ({':'.join(attrs)}, by the labeller)", "",
              "| cell | images |", "|---|---|"]
    lines += [f"| {n} | {int(counts.get(i, 0))} |" for i, n in enumerate(names)]
    if audit:
        lines += ["", "## Balance and novelty, measured by an independent judge", "",
                  "The judge is a classifier trained with another seed on other images; it took no "
                  "part in making, choosing or labelling this set. Discrepancy is the L2 distance "
                  "of the cell distribution to uniform (0 is balanced), with 95 % bootstrap "
                  "intervals; `corrected` removes the judge's own errors through its confusion "
                  "matrix on real test images. A near copy is closer to a training image than "
                  "99 % of real test images are.", "",
                  "| cells | hard | soft | corrected | judge-labeller agreement | near copies (features) | near copies (pixels) | precision | recall |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in audit:
            lines.append(
                f"| {r['cells']} | {r['hard']:.3f} [{r['hard_lo']:.3f}, {r['hard_hi']:.3f}] | "
                f"{r['soft']:.3f} [{r['soft_lo']:.3f}, {r['soft_hi']:.3f}] | {r['corrected']:.3f} "
                f"[{r['corrected_lo']:.3f}, {r['corrected_hi']:.3f}] | {r.get('agreement', float('nan')):.3f} | "
                f"{r['near_copy_share/features']:.1%} | {r['near_copy_share/pixels']:.1%} | "
                f"{r['precision']:.3f} | {r['recall']:.3f} |")
        copies = max(r["near_copy_share/pixels"] for r in audit)
        if copies > COPY_WARNING:
            lines += ["", f"**Not new faces:** {copies:.0%} of these images are closer to a "
                      "training image in pixels than 99 % of real unseen faces are. The set is "
                      "largely the training faces again (resampled latents keep each source "
                      "face's layout); do not use it where unseen faces are needed."]
    lines += ["", "## Licence", "", licence_text + " This set is derived from it and inherits its "
              "terms.", "", "## Loading", "", "```python", "from datasets import load_dataset",
              "", 'ds = load_dataset("imagefolder", data_dir="PATH/TO/THIS/FOLDER", split="train")',
              "```", ""]
    return "\n".join(lines)


def export(cfg: Config, method: str, out_dir: str | Path, hashes: dict[str, str]) -> Path:
    """Write `method`'s set as an imagefolder with its card under `out_dir`; returns the path.
    `hashes` are the config hashes of generate, pseudo_label and audit for this config."""
    if method not in cfg.generate.methods:
        raise UserError(f"--method {method!r} is not one of generate.methods "
                        f"({', '.join(cfg.generate.methods)}).")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; name a new folder with --out.")
    # the images are copied from local files: a remote workdir's stages are fetched first
    workdir = stage.local_view(Store(cfg.workdir), [stage_folder(n, cfg) for n in _READS])
    gen = _completed(workdir, cfg, "generate", hashes["generate"])
    labels = _completed(workdir, cfg, "pseudo_label", hashes["pseudo_label"])
    audit_dir = _completed(workdir, cfg, "audit", hashes["audit"])
    _sound(labels, "pseudo_label")
    _sound(audit_dir, "audit")
    rows, root = manifest.read(labels.path(f"{method}/{manifest.MANIFEST_FILE}"))
    if rows.empty:
        raise UserError(f"the {method!r} set holds no image (a quota set that kept nothing: see "
                        f"{gen.uri(method)}); there is nothing to export.")
    recorded = gen.read_json(layout.STAGE_FILE).get("files") or {}
    quota = (gen.read_json(f"{method}/{layout.GENERATED_QUOTA}")
             if gen.exists(f"{method}/{layout.GENERATED_QUOTA}") else None)
    audit = [r for r in audit_dir.read_json(layout.AUDIT_JSON)["sets"] if r["set"] == method]
    meta = workdir.sub(stage_folder("harvest", cfg))
    t_star = meta.read_json(META_FILE).get("t_star") if meta.exists(META_FILE) else cfg.harvest.t_star
    tmp = out.parent / f"{TMP_MARK}{out.name}-{uuid.uuid4().hex[:8]}"
    (tmp / SPLIT).mkdir(parents=True)
    try:
        with open(tmp / SPLIT / METADATA, "w") as meta_file:
            for i, r in enumerate(rows.itertuples(index=False)):
                name = f"{i:06d}.png"
                _copy_checked(Path(root) / r.path, tmp / SPLIT / name, recorded, gen.path())
                record: dict[str, Any] = {"file_name": name, "method": method,
                                          "component": int(r.component), "seed": int(r.seed)}
                for a in cfg.classifiers.attributes:
                    record[a] = getattr(r, a)
                    record[conf_column(a)] = float(getattr(r, conf_column(a)))
                meta_file.write(json.dumps(record) + "\n")
        (tmp / CARD).write_text(_card(cfg, method, hashes, rows, quota, audit, t_star))
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except OSError as exc:  # a full disk, a read-only folder: named by --out, not by the temporary
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"--out {out} could not be written: "
                        f"{exc.strerror or type(exc).__name__}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
