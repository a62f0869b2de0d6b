"""What a quota set costs and gives, setting by setting, on a finished run's upstream: each
variant renders one quota set again (generate, pseudo_label and audit) in a scratch workdir that
starts `--from` the run's workdir, all in one process on one local Ray, one after the other.

    .venv/bin/python benchmarks/quota_tradeoff.py jobs/demo.yaml --workdir runs/demo \\
        [--method quota_adaptive] [--variant 'name=key=value,key=value' ...] [--scratch DIR]

Without `--variant` it compares the config as it is with every render finished
(`generate.quota.exit_checks=[]`), at the config's budget and at half it. Prints, per
variant: images kept of those asked, renders, renders stopped early, UNet and labeller
evaluations per kept image, the judge's corrected discrepancy over the quota cells with its 95 %
interval, pixel near copies and the wall time of the three stages. The peer of every variant is
the first one (the config as it is), in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ["generate", "pseudo_label", "audit"]


def _variants(args: argparse.Namespace, budget: float) -> dict[str, dict[str, object]]:
    if not args.variant:
        return {"as configured": {},
                "every render finished": {"generate.quota.exit_checks": []},
                f"every render finished, budget {budget / 2:g}": {
                    "generate.quota.exit_checks": [], "generate.quota.budget": budget / 2}}
    out: dict[str, dict[str, object]] = {}
    for text in args.variant:
        name, _, sets = text.partition("=")
        out[name] = {k: yaml.safe_load(v) for k, v in
                     (item.split("=", 1) for item in sets.split(",") if item)}
    return out


def _row(work: Path, method: str, seconds: float) -> dict[str, object]:
    quota = json.loads((work / "generated" / method / "quota.json").read_text())
    audit = pd.read_csv(work / "audit" / "audit.csv")
    cells = ":".join(quota["cells_of"])
    judged = audit[(audit["set"] == method) & (audit["cells"] == cells)].iloc[0]
    kept = quota["kept"]
    return {"kept": f"{kept}/{quota['target']}", "renders": quota["renders"],
            "stopped early": quota.get("exited", 0),
            "UNet per kept": round(quota["unet_per_kept"], 1) if kept else None,
            "labeller per kept": round(quota["labeller_per_kept"], 1) if kept else None,
            "judge: corrected [95 %]": f"{judged['corrected']:.3f} [{judged['corrected_lo']:.3f}, "
                                       f"{judged['corrected_hi']:.3f}]",
            "pixel near copies": f"{judged['near_copy_share/pixels']:.1%}",
            "seconds": round(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--workdir", type=Path, required=True, help="a finished run of the config")
    ap.add_argument("--method", default="quota_adaptive")
    ap.add_argument("--variant", action="append", help="name=key=value,key=value (repeatable)")
    ap.add_argument("--scratch", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from gammaface import config
    from gammaface.commands import pipeline
    from gammaface.distributed.runtime import connect

    base = config.load(args.config, {"workdir": str(args.workdir)})
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="quota-tradeoff-"))
    connect(base.ray)
    rows = {}
    try:
        for name, sets in _variants(args, base.generate.quota.budget).items():
            work = scratch / f"v{len(rows)}"
            shutil.rmtree(work, ignore_errors=True)
            cfg = config.load(args.config, {"generate.methods": [args.method],
                                            "downstream.methods": ["baseline"],
                                            **sets, "workdir": str(work)})
            started = time.perf_counter()
            pipeline.run(cfg, STAGES, echo=lambda s: print(f"  [{name}] {s}", flush=True),
                         start_from=str(args.workdir))
            rows[name] = _row(work, args.method, time.perf_counter() - started)
            print(json.dumps({name: rows[name]}), flush=True)
    finally:
        ray.shutdown()
    print()
    print(f"{args.method} on {args.workdir} ({args.config.name}):")
    print(pd.DataFrame.from_dict(rows, orient="index").to_markdown())


if __name__ == "__main__":
    main()
