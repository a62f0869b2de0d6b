"""`gammaface gmm sweep`: harvest + BIC search for several settings, one table to choose from.

Each (source, t*) is harvested once into `sweep/<source>-t<t*>/latents`; each projection is
searched into `sweep/<source>-t<t*>/gmm-<space>`. The table (printed, and written to
`sweep/sweep.csv` and `sweep/sweep.md`) gives the chosen K, the relative BIC gain over K = 1 and,
for forward latents, the NMI between component and every attribute. Rows of earlier sweeps in
the same workdir stay in the table unless remeasured.
"""

from __future__ import annotations

import io
from typing import Callable, Sequence

import pandas as pd

from gammaface.report import figures, tables
from gammaface.run import layout, stage, tracking
from gammaface.config import Config, LatentSource
from gammaface.data import registry
from gammaface.common.errors import UserError
from gammaface.latents import store as latent_store
from gammaface.run.stage import StageContext
from gammaface.stages import folder as stage_folder
from gammaface.stages import folders as stage_folders
from gammaface.stages.gmm_search import work as gmm_search
from gammaface.stages.harvest import work as harvest
from gammaface.storage.store import Store

SWEEP_DIR, SWEEP_TABLE, SWEEP_PLOT = layout.SWEEP_DIR, layout.SWEEP_TABLE, layout.SWEEP_PLOT


def _with_latents(cfg: Config, t_star: int, source: LatentSource) -> Config:
    c = cfg.model_copy(deep=True)
    c.harvest.t_star, c.harvest.source = t_star, source
    return c


def _with_space(cfg: Config, pca: int) -> Config:
    c = cfg.model_copy(deep=True)
    if pca:
        c.gmm.pca_dim = pca
        c.gmm.space = "pca"
    else:
        c.gmm.space = "pixels"
        c.gmm.pca_dim = None
    c.gmm.k = None
    return c


def sweep(cfg: Config, t_stars: Sequence[int], pcas: Sequence[int], sources: Sequence[LatentSource],
          hash_of: Callable[[str], str], echo: Callable[[str], None] = print) -> pd.DataFrame:
    """`hash_of` gives the pipeline's config hash of a stage: the sweep reads the DDPM that
    train_ddpm completed for this config, and runs the harvest and gmm_search stages into its
    own folders (outside any MLflow run)."""
    workdir = Store(cfg.workdir)
    if not workdir.is_local:  # its settings' folders are scratch, not stages to stage up
        raise UserError(f"gammaface gmm sweep runs in a local workdir; {workdir.root} is remote. "
                        "Sweep in a local one and put the chosen t* and space in the config.")
    ddpm = workdir.sub(stage_folder("train_ddpm", cfg))
    if stage.completed_hash(ddpm) != hash_of("train_ddpm"):
        raise UserError(f"the sweep needs a trained DDPM for this config in {workdir.root}; run "
                        "`gammaface run CONFIG --stages prepare,train_ddpm` first.")
    rows = []
    for source in sources:
        for t in t_stars:
            folder = f"{SWEEP_DIR}/{source}-t{t}"
            echo(f"harvesting {cfg.harvest.n} {source} latents at t*={t}")
            at = _with_latents(cfg, t, source)
            latents = {"harvest": f"{folder}/latents"}
            with tracking.setting_run(f"{source} t*={t}", {"harvest.source": source,
                                                           "harvest.t_star": t}):
                harvest.run(StageContext(at, workdir, "harvest", hash_of, echo=lambda s: None,
                                         folders={**stage_folders(at), **latents}))
            meta = workdir.sub(latents["harvest"]).read_json(latent_store.META_FILE)
            for pca in pcas:
                space = f"pca{pca}" if pca else "pixels"
                ctx = StageContext(_with_space(at, pca), workdir, "gmm_search", hash_of,
                                   echo=lambda s: None,
                                   folders={**stage_folders(at), **latents,
                                            "gmm_search": f"{folder}/gmm-{space}"})
                with tracking.setting_run(f"{source} t*={t} {space}", {
                        "harvest.source": source, "harvest.t_star": meta["t_star"],
                        "gmm.space": space}):
                    gmm_search.run(ctx)
                    record = ctx.out.read_json(layout.GMM_SELECTED)
                    row = {"source": source, "t_star": meta["t_star"], "space": space,
                           "chosen_k": record["k"], "bic_gain_over_k1": record["bic_gain_over_k1"]}
                    for attr in registry.ATTRIBUTE_NAMES:
                        row[f"nmi_{attr}"] = (record.get("nmi") or {}).get(attr)
                    tracking.log_metrics({k: float(v) for k, v in row.items()
                                          if k not in ("source", "space", "t_star")
                                          and v is not None})
                rows.append(row)
                echo(f"  {space}: K = {record['k']}")
    table = _merge(workdir.sub(SWEEP_DIR), pd.DataFrame(rows))
    out = workdir.sub(SWEEP_DIR)
    out.write_bytes(SWEEP_TABLE, table.to_csv(index=False).encode())
    out.write_bytes("sweep.md", tables.markdown(table).encode())
    out.write_bytes(SWEEP_PLOT, figures.sweep_curves(table))
    if out.is_local:
        for name in (SWEEP_TABLE, "sweep.md", SWEEP_PLOT):
            tracking.log_artifact(out.path(name), artifact_path="sweep")
    return table


def _merge(out: Store, new: pd.DataFrame) -> pd.DataFrame:
    """Earlier sweeps' rows stay in the table unless this sweep measured the same setting."""
    if not out.exists(SWEEP_TABLE):
        return new
    old = pd.read_csv(io.BytesIO(out.read_bytes(SWEEP_TABLE)))
    key = ["source", "t_star", "space"]
    kept = old.merge(new[key], on=key, how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"].drop(columns="_merge")
    table = pd.concat([kept, new], ignore_index=True)
    return table.sort_values(["source", "t_star", "space"], ignore_index=True)
