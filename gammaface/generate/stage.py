"""Stage `generate`: DDPM + mixture -> `generated/<method>/` (shard folders of PNGs and the
method's `manifest.parquet`), for every method of `generate.methods`.

Methods (each isolates one cause of a change in balance):
- `gmm`: the paper, equal counts per component; `gmm_weighted`: counts in proportion to the
  mixture's weights; `gmm_tempered`: in proportion to pi^alpha; `gmm_attr`: the counts that
  bring the protected intersection closest to uniform given each component's composition;
- `single_gaussian`: one Gaussian at the same t* and in the same space; `unconditional`: plain
  DDPM samples; `stratified`: training images of each protected cell in equal numbers, noised
  to t* and finished, the label-using reference for how much balance is attainable.

The plan is written first; then a Ray Data actor pool renders the shards not yet complete, each
into a temporary folder renamed into place when whole, so an interrupted run resumes at the
shard and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from gammaface import layout, tracking
from gammaface.config import GENERATION_METHODS, MIXTURE_METHODS, Config, uses_labeller
from gammaface.data import manifest
from gammaface.diffusion.model_io import load_scheduler
from gammaface.diffusion.sampler import effective_t, make_scheduler
from gammaface.errors import UserError
from gammaface.generate import shards as shard_io
from gammaface.generate import weights as balance
from gammaface.generate.draws import Renderer, write_sampling
from gammaface.generate.plan import NO_COMPONENT, Shard, counts_from_weights, make_plan, tempered
from gammaface.gmm import stage as gmm_stage
from gammaface.gmm.mixture import GaussianMixture
from gammaface.gmm.projection import Projection
from gammaface.latents import store as latent_store
from gammaface.ray_runtime import actor_resources, connect
from gammaface.stage import StageResult
from gammaface.storage import Store
from gammaface.viz import save_png

PLAN_FILE = "plan.json"
SAMPLING_FILE = "sampling.npz"
GRID_FILE = "components.png"
COMPOSITIONS = "compositions.csv"
PREDICTED = "predicted_balance.csv"


@dataclass
class Inputs:
    """What the mixture side hands to generation: the chosen mixture in its space, the
    latents in that space, and (forward harvest) each latent's source image and labels."""

    selected: dict[str, Any]
    meta: dict[str, Any]
    mixture: GaussianMixture
    projection: Projection | None
    space_X: np.ndarray
    source_paths: list[str]
    source_labels: pd.DataFrame | None
    train: pd.DataFrame
    image_root: str


def load_inputs(cfg: Config, workdir: Store) -> Inputs:
    gmm_dir = workdir.sub(layout.stage_dir("gmm_search", cfg))
    latents = workdir.sub(layout.stage_dir("harvest", cfg))
    selected = gmm_dir.read_json(gmm_stage.SELECTED)
    meta = latents.read_json(latent_store.META_FILE)
    index = latent_store.read_index(latents)
    mixture = GaussianMixture.load(gmm_dir.path(gmm_stage.mixture_file(selected["k"])))
    projection = None
    if selected["space"] == "features":
        space_X = np.load(gmm_dir.path(gmm_stage.FEATURES_FILE))
    else:
        space_X = latent_store.load_rows(latents, index)
        if selected["space"] == "pca":
            projection = Projection.load(gmm_dir.path(gmm_stage.PCA_FILE))
            space_X = projection.to_space(space_X).astype(np.float32)
    df, image_root = manifest.read(workdir.path(layout.manifest_path(cfg)))
    labels = None
    if meta["source"] == "forward":
        labels = df.set_index("path").loc[index["source_path"]].reset_index(drop=True)
    return Inputs(selected, meta, mixture, projection, space_X, list(index["source_path"]),
                  labels, df[df["split"] == "train"].reset_index(drop=True), image_root)


def _mixture_spec(inputs: Inputs, means: np.ndarray, variances: np.ndarray, resp: np.ndarray,
                  draw: str) -> dict[str, Any]:
    if draw == "gaussian":
        spec: dict[str, Any] = {"kind": "gaussian", "means": means, "variances": variances}
        if inputs.projection is not None:
            spec.update(pca_mean=inputs.projection.mean, pca_components=inputs.projection.components,
                        pca_residual_variance=np.array(inputs.projection.residual_variance))
        return spec
    mass = resp.T  # (K, n): a component picks its latents by their responsibility
    return {"kind": "resample", "probs": mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-300),
            "source": inputs.meta["source"], "source_paths": inputs.source_paths}


def _single_gaussian(inputs: Inputs, reg_covar: float) -> tuple[np.ndarray, np.ndarray]:
    """K = 1 in closed form: the latents' mean and variance (what EM converges to at once)."""
    X = inputs.space_X.astype(np.float64)
    return X.mean(axis=0, keepdims=True), X.var(axis=0, keepdims=True) + reg_covar


def strata(train: pd.DataFrame, protected: list[str]) -> dict[str, list[str]]:
    """Cell index -> the train images of that protected cell (cells without images left out)."""
    codes = balance.cell_codes(train, protected)
    paths = train["path"].to_numpy()
    return {str(c): list(paths[codes == c]) for c in np.unique(codes[codes >= 0])}


def component_compositions(cfg: Config, inputs: Inputs, resp: np.ndarray, spec: dict[str, Any],
                           renderer: Callable[[], Renderer], workdir: Store
                           ) -> tuple[np.ndarray, np.ndarray, str]:
    """(K, cells) protected-cell distribution per component, (K,) the labelled mass behind
    each (0: unknown), and where they came from."""
    protected = cfg.generate.protected
    n_cells = len(balance.cells(protected))
    if inputs.source_labels is not None:
        codes = balance.cell_codes(inputs.source_labels, protected)
        comp, mass = balance.compositions(resp, codes, n_cells)
        return comp, mass, "source labels"
    from gammaface.classifiers.labeller import Labeller

    labeller = Labeller.load(workdir.path(layout.stage_dir("train_classifiers", cfg)))
    r = renderer()
    comp = np.zeros((inputs.mixture.n_components, n_cells))
    for k in range(inputs.mixture.n_components):
        images = r.render(spec, k, cfg.generate.pilot, seed=cfg.generate.seed * 1000 + k)
        codes = balance.cell_codes(labeller.frame(images), protected)
        comp[k] = np.bincount(codes, minlength=n_cells) / len(codes)
    mass = np.full(inputs.mixture.n_components, float(cfg.generate.pilot))
    return comp, mass, f"labeller on {cfg.generate.pilot} pilot images per component"


def method_weights(cfg: Config, pi: np.ndarray, attr: balance.Balancing) -> dict[str, np.ndarray]:
    k = len(pi)
    return {"gmm": np.full(k, 1.0 / k), "gmm_weighted": np.asarray(pi, dtype=np.float64),
            "gmm_tempered": tempered(pi, cfg.generate.alpha), "gmm_attr": attr.weights}


class RenderShards:
    """Ray Data actor: the DDPM loaded once; maps one shard row to a written shard folder."""

    def __init__(self, renderer_kwargs: dict[str, Any], out_root: str, keys: dict[str, str]) -> None:
        self.renderer = Renderer(**renderer_kwargs)
        self.out_root = Path(out_root)
        self.keys = keys

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = []
        for i in range(len(batch["shard"])):
            shard = Shard(str(batch["method"][i]), int(batch["shard"][i]),
                          int(batch["component"][i]), int(batch["count"][i]), int(batch["seed"][i]))
            method_dir = self.out_root / shard.method
            spec = self.renderer.sampling(str(method_dir / SAMPLING_FILE))
            images = self.renderer.render(spec, shard.component, shard.count, shard.seed)
            shard_io.write(method_dir, shard, images, self.keys[shard.method])
            done.append(shard.count)
        return {"method": batch["method"], "shard": batch["shard"], "images": np.array(done)}


def render_pending(cfg: Config, pending: list[Shard], renderer_kwargs: dict[str, Any],
                   out: Path, keys: dict[str, str], total_images: int, done_images: int,
                   echo: Callable[[str], None]) -> None:
    """Render the pending shards on an actor pool, printing progress as shards complete."""
    import ray

    if not pending:
        return
    g = cfg.generate
    cpus, threads = actor_resources(g.concurrency, g.num_gpus)
    items = [s.record() for s in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        RenderShards, batch_size=1, batch_format="numpy",
        fn_constructor_kwargs=dict(renderer_kwargs={**renderer_kwargs, "threads": threads},
                                   out_root=str(out), keys=keys),
        compute=ray.data.ActorPoolStrategy(size=g.concurrency), num_cpus=cpus, num_gpus=g.num_gpus)
    start, made, shards_done, last = time.perf_counter(), 0, 0, 0.0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        made += int(batch["images"].sum())
        shards_done += len(batch["images"])
        now = time.perf_counter()
        if now - last >= 5.0 or shards_done == len(pending):
            rate = made / max(now - start, 1e-9)
            left = total_images - done_images - made
            echo(f"  shards {shards_done}/{len(pending)} this run, images "
                 f"{done_images + made}/{total_images} ({rate:.0f}/s, ETA {left / max(rate, 1e-9):.0f} s)")
            last = now


def component_grid(method_dir: Path, plan: list[Shard], per_row: int) -> np.ndarray:
    """One row per component (or cell): the first images of its first shard."""
    from gammaface.viz import grid

    firsts: dict[int, Shard] = {}
    for s in plan:
        firsts.setdefault(s.component, s)
    rows = []
    for comp in sorted(firsts):
        images = shard_io.first_images(method_dir, firsts[comp], per_row)
        blank = np.zeros_like(images[0])
        rows += images + [blank] * (per_row - len(images))
    return grid(rows, ncol=per_row, upscale=max(1, 48 // rows[0].shape[0]))


def method_key(cfg: Config, method: str) -> str:
    """The hash of exactly what one method's images depend on, so that a setting another
    method reads (alpha, protected, pilot), or one that changes no image (grid), redoes none
    of this method's shards."""
    import hashlib

    from gammaface.pipeline import stage_hash

    g = cfg.generate
    keys = ["generate.n", "generate.steps", "generate.eta", "generate.shard_size", "generate.seed"]
    if method == "unconditional":  # pure DDPM samples from T: no latents, no mixture
        upstream = ["train_ddpm"]
    elif method == "stratified":  # train images noised to the harvest's t*
        upstream = ["train_ddpm"]
        keys += ["harvest.t_star", "generate.protected"]
    else:
        upstream = ["gmm_search"]
        keys.append("generate.draw")
        if g.draw == "gaussian":
            keys.append("generate.temperature")
        if method == "gmm_tempered":
            keys.append("generate.alpha")
        if method == "gmm_attr":
            keys.append("generate.protected")
            if uses_labeller(cfg):
                keys.append("generate.pilot")
                upstream.append("train_classifiers")
    parts = [method, cfg.section_hash(*keys), *(stage_hash(n, cfg) for n in upstream)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def run(cfg: Config, workdir: Store, echo: Callable[[str], None] = print) -> StageResult:
    import mlflow

    g = cfg.generate
    connect(cfg.ray)
    out_store = workdir.sub(layout.stage_dir("generate", cfg))
    if not out_store.is_local:
        raise UserError(f"generate writes shard folders locally; workdir {workdir.root} is remote, "
                        "which this stage does not support yet.")
    out = Path(out_store.path())
    out.mkdir(parents=True, exist_ok=True)
    inputs = load_inputs(cfg, workdir)
    t_star = int(inputs.meta["t_star"])
    ddpm_dir = workdir.path(layout.stage_dir("train_ddpm", cfg))
    latent_dir = workdir.path(layout.stage_dir("harvest", cfg))
    t_used = effective_t(make_scheduler(load_scheduler(ddpm_dir), "ddim"), g.steps, t_star)
    if t_used != t_star:
        echo(f"  t* = {t_star} of the harvest lies off the {g.steps}-step grid; starting from {t_used}")
    renderer_kwargs = dict(ddpm_dir=ddpm_dir, t_star=t_used, steps=g.steps, eta=g.eta,
                           temperature=g.temperature, image_root=inputs.image_root,
                           latent_dir=latent_dir, batch_size=g.batch_size, use_gpu=g.num_gpus > 0)

    gm = inputs.mixture
    resp = gm.predict_proba(inputs.space_X)
    chosen_spec = _mixture_spec(inputs, gm.means_, gm.covariances_, resp, g.draw)
    protected = list(g.protected)
    plans: dict[str, list[Shard]] = {}
    rows: dict[str, int] = {}
    needs_comp = any(m in MIXTURE_METHODS for m in g.methods)
    if needs_comp:
        import torch

        comp, mass, comp_source = component_compositions(
            cfg, inputs, resp, chosen_spec,
            lambda: Renderer(**renderer_kwargs, threads=torch.get_num_threads()), workdir)
        unknown = [int(k) for k in np.flatnonzero(mass <= 0)]
        if unknown and len(unknown) < len(mass):
            echo(f"  warning: component(s) {', '.join(map(str, unknown))} hold no image with "
                 f"{', '.join(protected)} all labelled; their composition is unknown and "
                 "taken as uniform")
        attr = balance.balance_components(comp, mass)
        if "gmm_attr" in g.methods and not attr.solved:
            echo(f"  warning: gmm_attr falls back to equal weights: {attr.fallback}.")
            tracking.log_params({"generate.gmm_attr_fallback": attr.fallback})
        weights = method_weights(cfg, gm.weights_, attr)
        table = balance.predicted_balance(weights, comp, protected)
        out_store.write_bytes(PREDICTED, table.to_csv(index=False).encode())
        comp_table = pd.DataFrame(comp, columns=[":".join(c) for c in balance.cells(protected)])
        comp_table.insert(0, "component", np.arange(gm.n_components))
        for m in MIXTURE_METHODS:
            comp_table.insert(1 + MIXTURE_METHODS.index(m), f"weight/{m}", weights[m])
        out_store.write_bytes(COMPOSITIONS, comp_table.to_csv(index=False).encode())
        echo(f"  component compositions from {comp_source}; predicted balance "
             f"(intersection discrepancy): " + ", ".join(
                 f"{r['method']} {r['discrepancy/' + ':'.join(protected)]:.3f}"
                 for _, r in table.iterrows() if r["method"] in g.methods))
        for sentence in balance.equal_weight_warnings(table, protected):
            echo(f"  warning: {sentence}")
        tracking.log_metrics({f"predicted/{r['method']}/{k}": v for _, r in table.iterrows()
                              for k, v in r.items() if k.startswith("discrepancy/")})

    keys = {m: method_key(cfg, m) for m in g.methods}
    for method in g.methods:
        method_dir = out / method
        method_dir.mkdir(parents=True, exist_ok=True)
        if method in MIXTURE_METHODS:
            spec, comps = chosen_spec, list(range(gm.n_components))
            counts = counts_from_weights(weights[method], g.n)
        elif method == "single_gaussian":
            mean, var = _single_gaussian(inputs, cfg.gmm.reg_covar)
            spec = _mixture_spec(inputs, mean, var, np.ones((len(inputs.space_X), 1)), g.draw)
            counts, comps = np.array([g.n]), [0]
        elif method == "unconditional":
            spec, counts, comps = {"kind": "noise"}, np.array([g.n]), [NO_COMPONENT]
        else:  # stratified
            cell_paths = strata(inputs.train, protected)
            if not cell_paths:
                raise UserError(f"no train image has every protected attribute "
                                f"({', '.join(protected)}) labelled; stratified has nothing to draw.")
            missing = len(balance.cells(protected)) - len(cell_paths)
            if missing:
                echo(f"  stratified: {missing} protected cell(s) have no train image and are left out")
            spec = {"kind": "images", "cell_paths": cell_paths}
            comps = [int(c) for c in cell_paths]
            counts = counts_from_weights(np.ones(len(comps)), g.n)
        plan = make_plan(method, GENERATION_METHODS.index(method), counts, comps, g.shard_size, g.seed)
        write_sampling(method_dir / SAMPLING_FILE, **spec)
        out_store.write_json(f"{method}/{PLAN_FILE}", {"method_key": keys[method], "method": method,
                                                        "n": g.n, "shards": [s.record() for s in plan]})
        plans[method] = plan

    pending = {m: shard_io.sweep(out / m, plan, keys[m]) for m, plan in plans.items()}
    todo = [s for m in g.methods for s in pending[m]]
    total = g.n * len(g.methods)
    done_before = total - sum(s.count for s in todo)
    echo(f"  {len(todo)} of {sum(len(p) for p in plans.values())} shards to render "
         f"({done_before} images already complete)")
    started = time.perf_counter()
    render_pending(cfg, todo, renderer_kwargs, out, keys, total, done_before, echo)
    seconds = time.perf_counter() - started

    for method, plan in plans.items():
        method_dir = out / method
        df = shard_io.manifest_rows(method_dir, plan)
        out_store.write_parquet(f"{method}/{manifest.MANIFEST_FILE}", df, metadata={"image_root": "."})
        rows[method] = len(df)
        save_png(component_grid(method_dir, plan, g.grid), method_dir / GRID_FILE)
        mlflow.log_artifact(str(method_dir / GRID_FILE), artifact_path=f"grids/{method}")
    for name in (COMPOSITIONS, PREDICTED):
        if out_store.exists(name):
            mlflow.log_artifact(out_store.path(name))
    made = total - done_before
    tracking.log_metrics({"images": float(total), "images_rendered": float(made),
                          "images_per_s": made / max(seconds, 1e-9)})
    return StageResult("generate", rows=rows, outputs={m: out_store.uri(m) for m in plans},
                       metrics={"images_per_s": made / max(seconds, 1e-9)})
