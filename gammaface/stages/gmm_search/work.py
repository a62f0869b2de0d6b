"""Stage `gmm_search`: latents -> `gmm/` (bic.csv, bic.png, gmm_k{K}.npz, selected.json,
components.csv).

K runs over gmm.k_min..gmm.k_max, one Ray task per K; BIC picks K unless gmm.k forces it. For
`forward` latents the source images' labels are known, so the stage also writes what each
component of the chosen (or forced) K encodes: its attribute composition and the NMI between
component and attribute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gammaface.report import figures
from gammaface.run import layout, tracking
from gammaface.config import Config
from gammaface.data import manifest
from gammaface.common.errors import UserError
from gammaface.gmm.components import composition, nmi_table
from gammaface.gmm.mixture import resolve_backend
from gammaface.gmm.projection import Projection
from gammaface.gmm.search import bic_search
from gammaface.common.images import load_resized
from gammaface.latents import store as latent_store
from gammaface.distributed.runtime import connect
from gammaface.run.stage import StageContext, StageResult
from gammaface.storage.store import Store

BIC_TABLE = "bic.csv"
COMPONENTS = "components.csv"


def _gmm_kwargs(cfg: Config) -> dict[str, Any]:
    g = cfg.gmm
    return {"tol": g.tol, "reg_covar": g.reg_covar, "max_iter": g.max_iter, "n_init": g.n_init,
            "random_state": cfg.seed, "backend": g.backend}


def _search(ctx: StageContext) -> tuple[dict[str, Any], pd.DataFrame]:
    """BIC search over the harvested latents; writes everything into the stage's folder,
    returns the selection record and the BIC table."""
    import ray

    cfg, out = ctx.cfg, ctx.out
    latents, manifest_path = ctx.folder("harvest"), ctx.manifest_path
    g = cfg.gmm
    out.makedirs()
    meta = latents.read_json(latent_store.META_FILE)
    index = latent_store.read_index(latents)
    if g.space == "features":
        space_X = _source_features(meta, index, manifest_path,
                                   ctx.folder("train_classifiers").path())
        np.save(_local(out, layout.GMM_FEATURES), space_X)
        X = space_X
    else:
        X = latent_store.load_rows(latents, index)
        space_X = X
    if g.space == "pca":
        if not g.pca_dim:
            raise UserError("gmm.space = 'pca' needs gmm.pca_dim.")
        try:
            proj = Projection.fit(X, g.pca_dim, cfg.seed)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        proj.save(_local(out, layout.GMM_PCA))
        space_X = proj.to_space(X).astype(np.float32)
    ks = list(range(g.k_min, g.k_max + 1))
    if g.k is not None and g.k not in ks:
        ks.append(g.k)
    if max(ks) > len(X):
        key = "gmm.k" if g.k is not None and g.k == max(ks) and g.k > g.k_max else "gmm.k_max"
        raise UserError(f"{key} = {max(ks)} is more than the {len(X)} harvested latents.")
    backend = resolve_backend(g.backend)
    gpus = 1.0 if backend == "cuml" else 0.0
    result = bic_search(space_X, ks, {**_gmm_kwargs(cfg), "backend": backend},
                        use_ray=ray.is_initialized(), gpus_per_task=gpus, show=True,
                        resources=cfg.ray.placed("gmm_search"))
    chosen = g.k if g.k is not None else result.chosen_k
    for k, gm in result.mixtures.items():
        gm.save(_local(out, layout.gmm_mixture(k)))
    out.write_bytes(BIC_TABLE, result.table.to_csv(index=False).encode())
    out.write_bytes(layout.GMM_BIC_PLOT, figures.bic_curve(result.table, chosen))
    record = {
        "k": int(chosen), "chosen_by": "forced" if g.k is not None else "bic",
        "bic_choice": int(result.chosen_k), "space": g.space, "pca_dim": g.pca_dim,
        "t_star": meta["t_star"], "source": meta["source"], "n": int(len(X)),
        "dim": int(space_X.shape[1]), "backend": backend,
        "bic_gain_over_k1": _bic_gain(result.table, chosen),
    }
    labels = _source_labels(meta, index, manifest_path)
    if labels is not None:
        gm = result.mixtures[chosen]
        comp = gm.predict(space_X)
        table = composition(comp, labels, gm.weights_)
        out.write_bytes(COMPONENTS, table.to_csv(index=False).encode())
        record["nmi"] = {k: (None if np.isnan(v) else v) for k, v in nmi_table(comp, labels).items()}
    out.write_json(layout.GMM_SELECTED, record)
    return record, result.table


def _source_features(meta: dict[str, Any], index: pd.DataFrame, manifest_path: str,
                     classifier_dir: str) -> np.ndarray:
    """The attribute classifier's penultimate embedding of each latent's source image."""
    from gammaface.classifiers.labeller import Labeller

    if meta["source"] != "forward":
        raise UserError("gmm.space = 'features' needs forward latents and trained classifiers.")
    labeller = Labeller.load(classifier_dir)
    _, root = manifest.read(manifest_path)
    paths = list(index["source_path"])
    parts = [labeller.embed(load_resized(root, paths[s:s + 1024], labeller.image_size))
             for s in range(0, len(paths), 1024)]
    return np.concatenate(parts).astype(np.float32)


def _local(out: Store, rel: str) -> str:
    if not out.is_local:
        raise UserError("gmm_search writes its .npz files locally; use a local workdir.")
    return out.path(rel)


def _bic_gain(table: pd.DataFrame, k: int) -> float:
    """Relative BIC improvement of K over K = 1 (0 when K = 1 or K = 1 was not fitted)."""
    by_k = table.set_index("k")["bic"]
    if 1 not in by_k.index:
        return float("nan")
    return float((by_k[1] - by_k[k]) / abs(by_k[1]))


def _source_labels(meta: dict[str, Any], index: pd.DataFrame, manifest_path: str
                   ) -> pd.DataFrame | None:
    """Labels of each latent's source image (forward harvest only)."""
    if meta["source"] != "forward":
        return None
    df, _ = manifest.read(manifest_path)
    return manifest.labels_at(df, index["source_path"])


def run(ctx: StageContext) -> StageResult:
    connect(ctx.cfg.ray)
    out = ctx.out
    record, table = _search(ctx)
    for row in table.itertuples():
        tracking.log_metrics({"bic": row.bic, "aic": row.aic, "lower_bound": row.lower_bound},
                             step=int(row.k))
    tracking.log_metrics({"chosen_k": record["k"], "bic_gain_over_k1": record["bic_gain_over_k1"]})
    for attr, value in (record.get("nmi") or {}).items():
        if value is not None:
            tracking.log_metrics({f"nmi_{attr}": value})
    for name in (BIC_TABLE, layout.GMM_BIC_PLOT, layout.GMM_SELECTED, COMPONENTS,
                 layout.gmm_mixture(record["k"]), layout.GMM_PCA):
        if out.exists(name) and out.is_local:
            tracking.log_artifact(out.path(name))
    ctx.echo(f"chosen K = {record['k']} ({record['chosen_by']}); BIC table in {out.uri(BIC_TABLE)}")
    return StageResult("gmm_search", rows={"latents": record["n"], "k": record["k"]},
                       outputs={"selected": out.uri(layout.GMM_SELECTED)},
                       metrics={"chosen_k": float(record["k"])})
