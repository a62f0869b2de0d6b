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

from gammaface import layout, stage
from gammaface.config import Config
from gammaface.data import manifest, registry
from gammaface.errors import UserError
from gammaface.gmm.stage import search_latents
from gammaface.latents.harvest import harvest_latents
from gammaface.ray_runtime import connect
from gammaface.storage import Store

SWEEP_DIR = "sweep"
SWEEP_TABLE = "sweep.csv"


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


def sweep(cfg: Config, t_stars: Sequence[int], pcas: Sequence[int], sources: Sequence[str],
          echo: Callable[[str], None] = print) -> pd.DataFrame:
    from gammaface.pipeline import stage_hash

    workdir = Store(cfg.workdir)
    ddpm = workdir.sub(layout.stage_dir("train_ddpm", cfg))
    if stage.completed_hash(ddpm) != stage_hash("train_ddpm", cfg):
        raise UserError(f"the sweep needs a trained DDPM for this config in {workdir.root}; run "
                        "`gammaface run CONFIG --stages prepare,train_ddpm` first.")
    connect(cfg.ray)
    manifest_path = workdir.path(layout.manifest_path(cfg))
    rows = []
    for source in sources:
        for t in t_stars:
            folder = workdir.sub(SWEEP_DIR, f"{source}-t{t}")
            echo(f"harvesting {cfg.harvest.n} {source} latents at t*={t}")
            meta = harvest_latents(cfg, ddpm.path(), manifest_path, folder.sub("latents"),
                                   t_star=t, source=source, echo=lambda s: None)
            for pca in pcas:
                c = _with_space(cfg, pca)
                space = f"pca{pca}" if pca else "pixels"
                record, _ = search_latents(c, folder.sub("latents"), folder.sub(f"gmm-{space}"),
                                           manifest_path)
                row = {"source": source, "t_star": meta["t_star"], "space": space,
                       "chosen_k": record["k"], "bic_gain_over_k1": record["bic_gain_over_k1"]}
                for attr in registry.ATTRIBUTE_NAMES:
                    row[f"nmi_{attr}"] = (record.get("nmi") or {}).get(attr)
                rows.append(row)
                echo(f"  {space}: K = {record['k']}")
    table = _merge(workdir.sub(SWEEP_DIR), pd.DataFrame(rows))
    out = workdir.sub(SWEEP_DIR)
    out.write_bytes(SWEEP_TABLE, table.to_csv(index=False).encode())
    out.write_bytes("sweep.md", to_markdown(table).encode())
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


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.3f}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
