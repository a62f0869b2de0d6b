"""Stage `prepare`: the configured dataset -> `data/<name>/manifest.parquet` (+ SynthFaces images)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gammaface.run import tracking
from gammaface.config import Config
from gammaface.common.errors import UserError
from gammaface.data import fairface, ffhq, manifest, registry, synthfaces
from gammaface.data.synthfaces_spec import DEFAULT_SPEC, Spec
from gammaface.common.images import encode_png, grid, load_rgb
from gammaface.distributed.runtime import connect
from gammaface.run.stage import StageContext, StageResult
from gammaface.storage.store import Store

SAMPLE_GRID = "samples.png"
_GRID_SIDE = 8


def check(cfg: Config) -> None:
    """What this stage reads, checked before the pipeline marks any stage incomplete: the
    SynthFaces spec parses, the dataset's folders are there."""
    d = cfg.data
    if d.dataset == "synthfaces":
        if d.synthfaces.spec:
            Spec.from_yaml(d.synthfaces.spec)
    elif d.dataset == "ffhq":
        ffhq.check_folders(_folder(d.ffhq.images, "ffhq.images"),
                           _folder(d.ffhq.features, "ffhq.features"), d.ffhq.variant,
                           ffhq.CONFIG_NAMES)
    else:
        fairface.check_folders(_folder(d.fairface.labels, "fairface.labels"),
                               _folder(d.fairface.images, "fairface.images"), fairface.CONFIG_NAMES)


def _folder(value: str | None, key: str) -> Path:
    """A folder the dataset needs (the config refuses a dataset without it at load)."""
    if value is None:
        raise UserError(f"data.{key} is not set: name the dataset's folder there.")
    return Path(value)


def run(ctx: StageContext) -> StageResult:
    cfg, out = ctx.cfg, ctx.out
    out.makedirs()
    d = cfg.data
    if d.dataset == "synthfaces":
        s = d.synthfaces
        spec = Spec.from_yaml(s.spec) if s.spec else Spec(DEFAULT_SPEC)
        connect(cfg.ray)
        df = synthfaces.build(out.uri(), n=s.n, size=s.size, seed=s.seed, spec=spec,
                              train=s.splits.train, val=s.splits.val,
                              balanced_test=s.balanced_test, use_ray=True, progress=True)
    elif d.dataset == "ffhq":
        local = Path(ctx.local_out("writes its images through a local folder").path())
        df = ffhq.prepare(_folder(d.ffhq.images, "ffhq.images"),
                          _folder(d.ffhq.features, "ffhq.features"), local,
                          variant=d.ffhq.variant, names=ffhq.CONFIG_NAMES)
    else:
        local = Path(ctx.local_out("writes its images through a local folder").path())
        df = fairface.prepare(_folder(d.fairface.labels, "fairface.labels"),
                              _folder(d.fairface.images, "fairface.images"), local,
                              names=fairface.CONFIG_NAMES)
    text = manifest.summary(df)
    ctx.echo(text)
    _log(df, text, out)
    return StageResult("prepare", rows={s: int((df["split"] == s).sum()) for s in registry.SPLITS},
                       outputs={"manifest": out.uri(manifest.MANIFEST_FILE)})


def _log(df: pd.DataFrame, text: str, out: Store) -> None:
    metrics: dict[str, float] = {f"rows_{s}": int((df["split"] == s).sum()) for s in registry.SPLITS}
    for name in registry.ATTRIBUTE_NAMES:
        known = df[name].dropna()
        for cls in registry.get(name).classes:
            metrics[f"share_{name}_{cls}"] = float((known == cls).mean()) if len(known) else float("nan")
    tracking.log_metrics(metrics)
    tracking.log_text(text, "dataset_summary.txt")
    tracking.log_dataset(df, out.uri(manifest.MANIFEST_FILE), "manifest", "prepared")
    if out.is_local:
        _, root = manifest.read(out.path(manifest.MANIFEST_FILE))
        first = df.head(_GRID_SIDE * _GRID_SIDE)
        images = [load_rgb(Path(root) / p) for p in first["path"]]
        images = [im for im in images if im.shape == images[0].shape]
        sheet = grid(images, ncol=_GRID_SIDE, upscale=max(1, 64 // images[0].shape[0]))
        out.write_bytes(SAMPLE_GRID, encode_png(sheet))
        tracking.log_artifact(out.path(SAMPLE_GRID))
