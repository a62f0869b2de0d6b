"""SynthFaces: a procedural, biased face set with ground truth, made on the spot.

Labels are drawn from a spec (marginals plus conditional tables) with one generator; each image
is rendered from its own generator seeded by (seed, row), so the bytes of a row do not depend on
how rendering is split across processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gammaface.data import manifest, registry
from gammaface.data.cells import cells
from gammaface.data.synthfaces_render import render_face
from gammaface.data.synthfaces_spec import DEFAULT_SPEC, UNIFORM_SPEC, Spec
from gammaface.common.errors import UserError
from gammaface.common.images import encode_png
from gammaface.common.progress import progress as progress_bar
from gammaface.storage.store import Store

IMAGE_DIR = "images"
_LABEL_STREAM, _TEST_STREAM, _RENDER_STREAM = 0, 1, 2
# an evaluation set's labels and pixels come from streams no training image uses, so no image
# of it repeats one of the train, val or test splits whatever the seeds
_EVAL_LABEL_STREAM, _EVAL_RENDER_STREAM = 3, 4
_RENDER_BATCH = 128


def split_counts(n: int, train: float, val: float) -> dict[str, int]:
    n_train = int(round(n * train))
    n_val = min(int(round(n * val)), n - n_train)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def sample_labels(n: int, seed: int, spec: Spec | None = None, train: float = 0.8,
                  val: float = 0.1, balanced_test: bool = False) -> pd.DataFrame:
    """The manifest rows (path, split, attributes) before any image exists."""
    spec = spec or Spec(DEFAULT_SPEC)
    counts = split_counts(n, train, val)
    n_from_spec = n - counts["test"] if balanced_test else n
    idx = spec.sample(n_from_spec, np.random.default_rng([seed, _LABEL_STREAM]))
    if balanced_test:
        test_idx = Spec(UNIFORM_SPEC).sample(counts["test"], np.random.default_rng([seed, _TEST_STREAM]))
        idx = {k: np.concatenate([idx[k], test_idx[k]]) for k in idx}
    df = pd.DataFrame({
        name: np.asarray(registry.get(name).classes, dtype=object)[idx[name]]
        for name in registry.ATTRIBUTE_NAMES
    })
    df.insert(0, "split", np.repeat(list(counts), list(counts.values())))
    df.insert(0, "path", [f"{IMAGE_DIR}/{i:06d}.png" for i in range(n)])
    return df


def render_row(row: dict, size: int, seed: int, index: int, stream: int = _RENDER_STREAM) -> bytes:
    labels = {name: row[name] for name in registry.ATTRIBUTE_NAMES}
    arr = render_face(labels, size, np.random.default_rng([seed, stream, index]))
    return encode_png(arr)


def render_batch(batch: pd.DataFrame, out_uri: str, size: int, seed: int,
                 stream: int = _RENDER_STREAM) -> pd.DataFrame:
    """Render a batch of manifest rows and write their PNGs (a Ray Data task, or plain call)."""
    out = Store(out_uri)
    for row in batch.to_dict("records"):
        out.write_bytes(row["path"], render_row(row, size, seed, int(row["index"]), stream))
    return pd.DataFrame({"index": batch["index"]})


def render_all(rows: pd.DataFrame, out: Store, size: int, seed: int, use_ray: bool = True,
               progress: bool = False, stream: int = _RENDER_STREAM) -> None:
    """Write every row's image under `out`; in parallel through Ray Data when `use_ray`."""
    rows = rows.assign(index=np.arange(len(rows)))
    out.makedirs(IMAGE_DIR)
    if not use_ray:
        render_batch(rows, out.uri(), size, seed, stream)
        return
    import ray

    # Ray's annotation wants a function of the batch alone; fn_kwargs fill in the rest
    ds = ray.data.from_pandas(rows).map_batches(
        render_batch,  # type: ignore[arg-type]
        fn_kwargs={"out_uri": out.uri(), "size": size, "seed": seed,
                                 "stream": stream},
        batch_size=_RENDER_BATCH, batch_format="pandas", num_cpus=1)
    with progress_bar(len(rows), "rendered", unit="img", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            bar.update(len(batch))


def build(out_dir: str | Path, n: int, size: int = 32, seed: int = 0, spec: Spec | None = None,
          train: float = 0.8, val: float = 0.1, balanced_test: bool = False, use_ray: bool = True,
          progress: bool = False) -> pd.DataFrame:
    """Render the set into `out_dir/images/` and write `out_dir/manifest.parquet` last."""
    rows = sample_labels(n, seed, spec, train, val, balanced_test)
    out = Store(out_dir)
    if out.exists(manifest.MANIFEST_FILE):
        out.delete(manifest.MANIFEST_FILE)
    render_all(rows, out, size, seed, use_ray=use_ray, progress=progress)
    return manifest.write(rows, out, image_root=".")


def sample_cell_labels(attributes: list[str], n_per_cell: int, seed: int,
                       spec: Spec | None = None) -> pd.DataFrame:
    """Labels with exactly `n_per_cell` rows in every cell of `attributes` (each combination of
    their classes, in mixed-radix order), the other attributes drawn from the spec's joint
    distribution given the cell: the population's own faces, with the cells made equal."""
    spec = spec or Spec(DEFAULT_SPEC)
    joint = spec.joint()
    axes = [registry.ATTRIBUTE_NAMES.index(a) for a in attributes]
    rng = np.random.default_rng([seed, _EVAL_LABEL_STREAM])
    picked = []
    for cell in cells(attributes):
        index: list[slice | int] = [slice(None)] * joint.ndim
        for ax, a, value in zip(axes, attributes, cell):
            index[ax] = registry.get(a).classes.index(value)
        part = np.zeros_like(joint)
        part[tuple(index)] = joint[tuple(index)]
        mass = part.sum()
        if mass <= 0:
            raise UserError(f"{spec.source}: the cell {':'.join(cell)} of {', '.join(attributes)} "
                            "has probability 0, so no evaluation image can be drawn for it.")
        flat = rng.choice(part.size, n_per_cell, p=(part / mass).reshape(-1))
        picked.append(np.stack(np.unravel_index(flat, joint.shape), axis=1))
    idx = np.concatenate(picked)
    df = pd.DataFrame({name: np.asarray(registry.get(name).classes, dtype=object)[idx[:, i]]
                       for i, name in enumerate(registry.ATTRIBUTE_NAMES)})
    df.insert(0, "split", "test")
    df.insert(0, "path", [f"{IMAGE_DIR}/{i:06d}.png" for i in range(len(df))])
    return df


def build_eval(out_dir: str | Path, attributes: list[str], n_per_cell: int, size: int, seed: int,
               spec: Spec | None = None, use_ray: bool = True) -> pd.DataFrame:
    """Render an evaluation set with equal counts per cell of `attributes` into
    `out_dir/images/`; its manifest (every row in split `test`) is written last."""
    rows = sample_cell_labels(attributes, n_per_cell, seed, spec)
    out = Store(out_dir)
    if out.exists(manifest.MANIFEST_FILE):
        out.delete(manifest.MANIFEST_FILE)
    render_all(rows, out, size, seed, use_ray=use_ray, progress=use_ray,
               stream=_EVAL_RENDER_STREAM)
    return manifest.write(rows, out, image_root=".")
