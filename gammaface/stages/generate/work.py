"""Stage `generate`: DDPM + mixture -> `generated/<method>/` (shard folders of PNGs and the
method's `manifest.parquet`), for every method of `generate.methods`.

The methods, and what each isolates, are the registry of `gammaface.generate.methods`: this
stage asks each for its family, its key and its draw, and names none of them.

The plan is written first; then a Ray Data actor pool renders the shards not yet complete, each
into a temporary folder renamed into place when whole, so an interrupted run resumes at the
shard and ends with the same bytes as an uninterrupted one. Quota sets render round by round on
actors started once and kept for every round (`_RoundPool`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from gammaface.run import layout, tracking
from gammaface.config import Config, quota_confidence, quota_n
from gammaface.data import manifest
from gammaface.data.cells import cell_codes, cells
from gammaface.diffusion.model_io import load_scheduler
from gammaface.diffusion.sampler import effective_t, evaluations, make_scheduler
from gammaface.generate import methods as generation
from gammaface.generate import shards as shard_io
from gammaface.generate import quota as quota_lib
from gammaface.generate import weights as balance
from gammaface.generate.draws import Renderer, RenderShards
from gammaface.generate.specs import SAMPLING_FILE, DrawSpec, GaussianDraw, NoiseDraw, ResampleDraw, write_sampling
from gammaface.generate.methods import DrawInputs, method_key, quota_attributes, quota_draw
from gammaface.generate.plan import NO_COMPONENT, Shard, counts_from_weights, make_plan
from gammaface.gmm.mixture import GaussianMixture
from gammaface.gmm.projection import Projection
from gammaface.common.images import encode_png
from gammaface.latents import store as latent_store
from gammaface.common.progress import progress
from gammaface.distributed.runtime import actor_resources, connect, placement
from gammaface.run.stage import StageContext, StageResult
from gammaface.storage.store import Store, pull

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

PLAN_FILE = "plan.json"
PREDICTED = layout.GENERATED_PREDICTED


@dataclass
class _Inputs:
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


def _load_inputs(ctx: StageContext) -> _Inputs:
    gmm_dir, latents = ctx.folder("gmm_search"), ctx.folder("harvest")
    selected = gmm_dir.read_json(layout.GMM_SELECTED)
    meta = latents.read_json(latent_store.META_FILE)
    index = latent_store.read_index(latents)
    mixture = GaussianMixture.load(gmm_dir.path(layout.gmm_mixture(selected["k"])))
    projection = None
    if selected["space"] == "features":
        space_X = np.load(gmm_dir.path(layout.GMM_FEATURES))
    else:
        space_X = latent_store.load_rows(latents, index)
        if selected["space"] == "pca":
            projection = Projection.load(gmm_dir.path(layout.GMM_PCA))
            space_X = projection.to_space(space_X).astype(np.float32)
    df, image_root = manifest.read(ctx.manifest_path)
    labels = None
    if meta["source"] == "forward":
        labels = manifest.labels_at(df, index["source_path"])
    return _Inputs(selected, meta, mixture, projection, space_X, list(index["source_path"]),
                  labels, df[df["split"] == "train"].reset_index(drop=True), image_root)


def _mixture_spec(inputs: _Inputs, means: np.ndarray, variances: np.ndarray, resp: np.ndarray,
                  draw: str) -> DrawSpec:
    if draw == "gaussian":
        p = inputs.projection
        if p is None:
            return GaussianDraw(means, variances)
        return GaussianDraw(means, variances, p.mean, p.components, np.array(p.residual_variance))
    mass = resp.T  # (K, n): a component picks its latents by their responsibility
    return ResampleDraw(mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-300),
                        inputs.meta["source"], inputs.source_paths)


def _component_compositions(ctx: StageContext, inputs: _Inputs, resp: np.ndarray,
                            spec: DrawSpec, renderer: Callable[[], Renderer]
                            ) -> tuple[np.ndarray, np.ndarray, str]:
    """(K, cells) protected-cell distribution per component, (K,) the labelled mass behind
    each (0: unknown), and where they came from."""
    cfg = ctx.cfg
    protected = cfg.generate.protected
    n_cells = len(cells(protected))
    if inputs.source_labels is not None:
        codes = cell_codes(inputs.source_labels, protected)
        comp, mass = balance.compositions(resp, codes, n_cells)
        return comp, mass, "source labels"
    from gammaface.classifiers.labeller import Labeller

    labeller = Labeller.load(ctx.folder("train_classifiers").path())
    r = renderer()
    comp = np.zeros((inputs.mixture.n_components, n_cells))
    for k in range(inputs.mixture.n_components):
        images = r.render(spec, k, cfg.generate.pilot, seed=cfg.generate.seed * 1000 + k)
        codes = cell_codes(labeller.frame(images), protected)
        comp[k] = np.bincount(codes, minlength=n_cells) / len(codes)
    mass = np.full(inputs.mixture.n_components, float(cfg.generate.pilot))
    return comp, mass, f"labeller on {cfg.generate.pilot} pilot images per component"


def _method_weights(cfg: Config, pi: np.ndarray, attr: balance.Balancing) -> dict[str, np.ndarray]:
    """Every mixture method's share of images per component."""
    return {m: generation.get(m).weights(cfg, pi, attr) for m in generation.names("mixture")}


def _render_pending(cfg: Config, pending: list[Shard], renderer_kwargs: dict[str, Any],
                   out: Path, keys: dict[str, str], total_images: int, done_images: int,
                   publish: str | None = None) -> None:
    """Render the pending shards on an actor pool, with progress as shards complete."""
    import ray

    if not pending:
        return
    g = cfg.generate
    cpus, threads = actor_resources(g.concurrency, g.num_gpus)
    items = [s.record() for s in pending]
    ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        RenderShards, batch_size=1, batch_format="numpy",
        fn_constructor_kwargs=dict(renderer_kwargs={**renderer_kwargs, "threads": threads},
                                   out_root=str(out), keys=keys, publish=publish),
        compute=ray.data.ActorPoolStrategy(size=g.concurrency), num_cpus=cpus, num_gpus=g.num_gpus,
        **placement(cfg, "generate"))
    with progress(total_images, "images", unit="img", initial=done_images) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            bar.update(int(batch["images"].sum()))


class _RoundPool:
    """The quota rounds' render actors, started once for all of a stage's rounds. A Ray Data
    pool per round would start its actors and load the DDPM and the labeller again for every
    round (seconds each, up to `max_rounds` times); these keep them loaded between rounds."""

    def __init__(self, cfg: Config, renderer_kwargs: dict[str, Any], out: Path,
                 keys: dict[str, str], quota: dict[str, dict[str, Any]], labeller_dir: str,
                 publish: str | None) -> None:
        import ray

        g = cfg.generate
        cpus, threads = actor_resources(g.concurrency, g.num_gpus)
        actor = ray.remote(RenderShards).options(num_cpus=cpus, num_gpus=g.num_gpus,
                                                 **placement(cfg, "generate"))
        self.actors: list[Any] = [actor.remote(renderer_kwargs={**renderer_kwargs, "threads": threads},
                                    out_root=str(out), keys=keys, quota=quota,
                                    labeller_dir=labeller_dir, publish=publish)
                       for _ in range(g.concurrency)]

    def render(self, pending: list[Shard], total: int) -> None:
        """Render one round's pending shards, each actor taking the next as it frees up."""
        from ray.util import ActorPool

        rows = [{k: np.array([v]) for k, v in s.record().items()} for s in pending]
        with progress(total, "renders", unit="img") as bar:
            for done in ActorPool(self.actors).map_unordered(
                    lambda a, row: a.__call__.remote(row), rows):
                bar.update(int(done["images"].sum()))

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)


def _published(ctx: StageContext) -> str | None:
    return None if ctx.publish is None else ctx.publish.uri()


def _gather(ctx: StageContext, rendered: list[Shard]) -> None:
    """Fetch the shards that actors on other machines rendered and published (a remote
    workdir), so the driver reads every shard from its own mirror."""
    if ctx.publish is None:
        return
    for s in rendered:
        rel = f"{s.method}/{s.name}"
        if not ctx.out.exists(f"{rel}/{shard_io.SHARD_FILE}"):
            pull(ctx.publish.sub(rel), ctx.out.sub(rel))


def _quota_sets(ctx: StageContext, methods: list[str], mixture_spec: DrawSpec,
                n_components: int, prior: np.ndarray | None, renderer_kwargs: dict[str, Any],
                out: Path, keys: dict[str, str], ddim: SchedulerMixin
                ) -> tuple[dict[str, list[Shard]], dict[str, dict[int, np.ndarray]], int, float]:
    """Render every quota set round by round (all sets' rounds on one actor pool), keep the
    images whose cells have room, and write each set's plan and `quota.json` (its cost counted
    on `ddim`, the renders' grid). Returns the plans, the kept render indices per shard, the
    renders made this run and the seconds."""
    cfg, echo = ctx.cfg, ctx.echo
    g, q = cfg.generate, cfg.generate.quota
    attrs = quota_attributes(cfg)
    names = [":".join(c) for c in cells(attrs)]
    shares = None if q.shares is None else np.array([q.shares.get(n, 0.0) for n in names])
    targets = quota_lib.targets(len(names), quota_n(cfg), shares)
    runs: list[quota_lib.QuotaRun] = []
    starts: dict[str, int | None] = {}  # each set's start level (none: pure noise)
    for method in methods:
        proposal = generation.get(method).proposal
        mixture = proposal != "unconditional"
        (out / method).mkdir(parents=True, exist_ok=True)
        write_sampling(out / method / SAMPLING_FILE, mixture_spec if mixture else NoiseDraw())
        # a render starts from the mixture's draw at its level, or from pure noise
        t_start = mixture_spec.start_level(renderer_kwargs["t_star"]) if mixture else None
        t_from = int(ddim.config.num_train_timesteps) if t_start is None else t_start
        runs.append(quota_lib.QuotaRun(
            method, generation.index(method), proposal,
            list(range(n_components)) if mixture else [NO_COMPONENT], targets,
            int(np.ceil(q.budget * quota_n(cfg))), g.shard_size, g.seed, q.max_rounds,
            prior=prior if proposal == "adaptive" else None,
            unet_per_render=evaluations(ddim, g.steps, t_from)))
        starts[method] = t_start
        shard_io.prune(out / method, None)
    settings = {m: {"attributes": attrs, "min_confidence": quota_confidence(cfg),
                    "exit_checks": list(q.exit_checks), "exit_below": q.exit_below}
                for m in methods}
    labeller_dir = ctx.folder("train_classifiers").path()
    pool: _RoundPool | None = None

    def render(todo: list[Shard]) -> None:
        nonlocal pool
        if pool is None:  # started at the first round with work: a resumed run may have none
            pool = _RoundPool(cfg, renderer_kwargs, out, keys, settings, labeller_dir, _published(ctx))
        pool.render(todo, sum(s.count for s in todo))
        _gather(ctx, todo)

    started = time.perf_counter()
    try:
        made_by = quota_lib.run_rounds(
            runs, lambda r, shards: shard_io.incomplete(out / r.method, shards, keys[r.method]),
            render, lambda r, s: shard_io.render_marks(out / r.method, s), echo)
    finally:
        if pool is not None:
            pool.close()
    made = sum(made_by.values())
    seconds = time.perf_counter() - started
    plans, kept = {}, {}
    for r in runs:
        shard_io.prune(out / r.method, {s.name for s in r.plan})
        summary = quota_lib.summary(r.tally, targets, names, r.unet_per_render)
        fresh = made_by[r.method] == summary["renders"]  # not resumed from an earlier run
        summary.update(method=r.method, proposal=r.proposal, cells_of=attrs, stopped=r.stopped,
                       min_confidence=quota_confidence(cfg), budget=q.budget,
                       draw=None if r.proposal == "unconditional" else quota_draw(cfg),
                       t_start=starts[r.method], exit_checks=list(q.exit_checks), exit_below=q.exit_below,
                       steps=g.steps,
                       # the wall time of the rounds, which render every quota set of the stage
                       # on one pool together; per second only for a set this run made whole
                       seconds=seconds,
                       kept_per_second=summary["kept"] / seconds if fresh and seconds > 0 else None)
        store = ctx.out
        store.write_json(f"{r.method}/{layout.GENERATED_QUOTA}", summary)
        store.write_json(f"{r.method}/{PLAN_FILE}", {"method_key": keys[r.method], "method": r.method,
                                                     "n": quota_n(cfg), "shards": [s.record() for s in r.plan]})
        plans[r.method], kept[r.method] = r.plan, r.kept
        short = [c for c in summary["cells"] if c["short"] > 0]
        cost = summary["renders_per_kept"]  # None: nothing kept
        exited = (f", {summary['exited']} stopped early" if q.exit_checks else "")
        echo(f"  {r.method}: kept {summary['kept']}/{summary['target']} from {summary['renders']} "
             f"renders of {summary['unet_per_render']} UNet evaluations each when finished{exited} ("
             + ("no image kept" if cost is None else
                f"{cost:.2f} renders, {summary['unet_per_kept']:.0f} UNet evaluations per kept image")
             + ")"
             + ("" if not short else f"; stopped ({r.stopped}) with {len(short)} cell(s) short: "
                + ", ".join(f"{c['cell']} by {c['short']}" for c in short)))
        nan = float("nan")
        tracking.log_metrics({f"quota/{r.method}/renders_per_kept": nan if cost is None else cost,
                              f"quota/{r.method}/unet_per_kept": nan if cost is None
                              else summary["unet_per_kept"],
                              f"quota/{r.method}/labeller_per_kept": nan if cost is None
                              else summary["labeller_per_kept"],
                              f"quota/{r.method}/unet_evaluations": float(summary["unet_evaluations"]),
                              f"quota/{r.method}/exited": float(summary["exited"]),
                              f"quota/{r.method}/kept": float(summary["kept"]),
                              f"quota/{r.method}/short": float(summary["target"] - summary["kept"])})
    return plans, kept, made, seconds


def _mixture_weights(ctx: StageContext, inputs: _Inputs, resp: np.ndarray, chosen_spec: DrawSpec,
                     renderer_kwargs: dict[str, Any], out_store: Store) -> dict[str, np.ndarray]:
    """Each mixture method's component weights, from the components' compositions over the
    protected cells; the compositions and the predicted balance are written beside the sets.
    Empty where no mixture method is asked for."""
    cfg, echo = ctx.cfg, ctx.echo
    g, gm = cfg.generate, inputs.mixture
    if not any(generation.in_family(m, "mixture") for m in g.methods):
        return {}
    import torch

    protected = list(g.protected)
    comp, mass, comp_source = _component_compositions(
        ctx, inputs, resp, chosen_spec,
        lambda: Renderer(**renderer_kwargs, threads=torch.get_num_threads()))
    unknown = [int(k) for k in np.flatnonzero(mass <= 0)]
    if unknown and len(unknown) < len(mass):
        echo(f"  warning: component(s) {', '.join(map(str, unknown))} hold no image with "
             f"{', '.join(protected)} all labelled; their composition is unknown and "
             "taken as uniform")
    attr = balance.balance_components(comp, mass)
    if "gmm_attr" in g.methods and not attr.solved:
        echo(f"  warning: gmm_attr falls back to equal weights: {attr.fallback}.")
        tracking.log_params({"generate.gmm_attr_fallback": attr.fallback})
    weights = _method_weights(cfg, gm.weights_, attr)
    table = balance.predicted_balance(weights, comp, protected)
    out_store.write_bytes(PREDICTED, table.to_csv(index=False).encode())
    comp_table = pd.DataFrame(comp, columns=[":".join(c) for c in cells(protected)])
    comp_table.insert(0, "component", np.arange(gm.n_components))
    for i, m in enumerate(generation.names("mixture")):
        comp_table.insert(1 + i, f"weight/{m}", weights[m])
    out_store.write_bytes(layout.GENERATED_COMPOSITIONS, comp_table.to_csv(index=False).encode())
    echo(f"  component compositions from {comp_source}; predicted balance "
         f"(intersection discrepancy): " + ", ".join(
             f"{r['method']} {r['discrepancy/' + ':'.join(protected)]:.3f}"
             for _, r in table.iterrows() if r["method"] in g.methods))
    for sentence in balance.equal_weight_warnings(table, protected):
        echo(f"  warning: {sentence}")
    tracking.log_metrics({f"predicted/{r['method']}/{k}": v for _, r in table.iterrows()
                          for k, v in r.items() if k.startswith("discrepancy/")})
    return weights


def _plan_sets(ctx: StageContext, inputs: _Inputs, chosen_spec: DrawSpec,
               weights: dict[str, np.ndarray], keys: dict[str, str], out: Path,
               out_store: Store) -> dict[str, list[Shard]]:
    """Every set but the quota sets: its draw spec and its plan of shards, written to disk."""
    cfg, g, gm = ctx.cfg, ctx.cfg.generate, inputs.mixture
    given = DrawInputs(cfg, gm, inputs.space_X, inputs.train,
                       lambda means, variances, resp: _mixture_spec(inputs, means, variances, resp, g.draw),
                       ctx.echo)
    plans: dict[str, list[Shard]] = {}
    for method in g.methods:
        if generation.in_family(method, "quota"):
            continue
        method_dir = out / method
        method_dir.mkdir(parents=True, exist_ok=True)
        if generation.in_family(method, "mixture"):
            spec, comps = chosen_spec, list(range(gm.n_components))
            counts = counts_from_weights(weights[method], g.n)
        else:
            draw = generation.get(method).draw(given)
            spec, counts, comps = draw.spec, draw.counts, draw.components
        plan = make_plan(method, generation.index(method), counts, comps, g.shard_size, g.seed)
        write_sampling(method_dir / SAMPLING_FILE, spec)
        out_store.write_json(f"{method}/{PLAN_FILE}", {"method_key": keys[method], "method": method,
                                                        "n": g.n, "shards": [s.record() for s in plan]})
        plans[method] = plan
    return plans


def _quota_spec(ctx: StageContext, inputs: _Inputs, chosen_spec: DrawSpec, resp: np.ndarray,
                ddim: Any) -> DrawSpec:
    """How the quota sets' mixture proposal draws: the quota's own draw, and its start level
    on the sampler's grid where one is set."""
    g, gm = ctx.cfg.generate, inputs.mixture
    q_spec = chosen_spec if quota_draw(ctx.cfg) == g.draw else _mixture_spec(
        inputs, gm.means_, gm.covariances_, resp, quota_draw(ctx.cfg))
    if g.quota.t_start is not None:  # resampled picks noised on up and finished from there
        t_q = effective_t(ddim, g.steps, g.quota.t_start)
        if t_q != g.quota.t_start:
            ctx.echo(f"  generate.quota.t_start = {g.quota.t_start} lies off the {g.steps}-step "
                     f"grid; quota draws start from {t_q}")
        assert isinstance(q_spec, ResampleDraw)  # the config allows t_start for resampling only
        q_spec = replace(q_spec, t_start=t_q)
    return q_spec


def _write_sets(out_store: Store, out: Path, plans: dict[str, list[Shard]],
                kept: dict[str, dict[int, np.ndarray]], grid_side: int) -> dict[str, int]:
    """Each set's manifest and component grid; returns the images per set."""
    rows: dict[str, int] = {}
    for set_name, plan in plans.items():
        set_dir = out / set_name
        df = shard_io.manifest_rows(set_dir, plan, kept.get(set_name))
        out_store.write_parquet(f"{set_name}/{manifest.MANIFEST_FILE}", df, metadata={"image_root": "."})
        rows[set_name] = len(df)
        grid = shard_io.component_grid(set_dir, plan, grid_side)
        (set_dir / layout.GENERATED_GRID).write_bytes(encode_png(grid))
        tracking.log_artifact(str(set_dir / layout.GENERATED_GRID), artifact_path=f"grids/{set_name}")
    for name in (layout.GENERATED_COMPOSITIONS, PREDICTED):
        if out_store.exists(name):
            tracking.log_artifact(out_store.path(name))
    return rows


def run(ctx: StageContext) -> StageResult:
    cfg, echo = ctx.cfg, ctx.echo
    g = cfg.generate
    connect(cfg.ray)
    out_store = ctx.local_out("writes shard folders locally")
    out = Path(out_store.path())
    out.mkdir(parents=True, exist_ok=True)
    inputs = _load_inputs(ctx)
    t_star = int(inputs.meta["t_star"])
    ddpm_dir = ctx.folder("train_ddpm").path()
    ddim = make_scheduler(load_scheduler(ddpm_dir), "ddim")  # the grid every start level snaps to
    t_used = effective_t(ddim, g.steps, t_star)
    if t_used != t_star:
        echo(f"  t* = {t_star} of the harvest lies off the {g.steps}-step grid; starting from {t_used}")
    renderer_kwargs: dict[str, Any] = dict(ddpm_dir=ddpm_dir, t_star=t_used, steps=g.steps, eta=g.eta,
                           temperature=g.temperature, image_root=inputs.image_root,
                           latent_dir=ctx.folder("harvest").path(), batch_size=g.batch_size,
                           use_gpu=g.num_gpus > 0)
    resp = inputs.mixture.predict_proba(inputs.space_X)
    chosen_spec = _mixture_spec(inputs, inputs.mixture.means_, inputs.mixture.covariances_, resp,
                                g.draw)
    weights = _mixture_weights(ctx, inputs, resp, chosen_spec, renderer_kwargs, out_store)
    keys: dict[str, str] = {m: method_key(cfg, m, ctx.input_hash) for m in g.methods}
    plans = _plan_sets(ctx, inputs, chosen_spec, weights, keys, out, out_store)

    pending = {m: shard_io.sweep(out / m, plan, keys[m]) for m, plan in plans.items()}
    todo = [s for m in plans for s in pending[m]]
    total = g.n * len(plans)
    done_before = total - sum(s.count for s in todo)
    echo(f"  {len(todo)} of {sum(len(p) for p in plans.values())} shards to render "
         f"({done_before} images already complete)")
    started = time.perf_counter()
    _render_pending(cfg, todo, renderer_kwargs, out, keys, total, done_before,
                    publish=_published(ctx))
    _gather(ctx, todo)
    seconds = time.perf_counter() - started
    made = total - done_before
    kept: dict[str, dict[int, np.ndarray]] = {}
    quota_methods = [m for m in g.methods if generation.in_family(m, "quota")]
    if quota_methods:
        comp_prior = None  # each component's composition over the quota cells, where known
        if inputs.source_labels is not None:
            q_attrs = quota_attributes(cfg)
            comp_prior, _ = balance.compositions(resp, cell_codes(inputs.source_labels, q_attrs),
                                                 len(cells(q_attrs)))
        q_plans, kept, q_renders, q_seconds = _quota_sets(
            ctx, quota_methods, _quota_spec(ctx, inputs, chosen_spec, resp, ddim),
            inputs.mixture.n_components, comp_prior, renderer_kwargs, out, keys, ddim)
        plans.update(q_plans)
        made, seconds = made + q_renders, seconds + q_seconds

    rows = _write_sets(out_store, out, plans, kept, g.grid)
    tracking.log_metrics({"images": float(sum(rows.values())), "images_rendered": float(made),
                          "images_per_s": made / max(seconds, 1e-9)})
    return StageResult("generate", rows=rows, outputs={m: out_store.uri(m) for m in plans},
                       metrics={"images_per_s": made / max(seconds, 1e-9)})
