"""Stage `train_judge`: the judge -> `judge/` (model.safetensors, classifier.json, metrics.json).

The judge measures the balance of every generated set (stage `audit`) and takes no part in
making, choosing or labelling them: another seed, and other images. For SynthFaces those are a
fresh render under `judge/data/` with the judge's own seed; for FFHQ and FairFace the share of
the train split that `train_classifiers` holds out from the labeller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gammaface.run import tracking
from gammaface.classifiers import labeller as labeller_io
from gammaface.classifiers.judge import judge_rows
from gammaface.classifiers.labeller import Labeller
from gammaface.classifiers.labels import encode
from gammaface.classifiers.scores import score
from gammaface.classifiers.train_loop import fit_classifier
from gammaface.data import manifest, synthfaces
from gammaface.data.synthfaces_spec import DEFAULT_SPEC, Spec
from gammaface.common.errors import UserError
from gammaface.common.images import load_resized
from gammaface.distributed.runtime import connect
from gammaface.run.stage import StageContext, StageResult

DATA_DIR = "data"
METRICS_FILE = "metrics.json"


def run(ctx: StageContext) -> StageResult:
    cfg, j = ctx.cfg, ctx.cfg.judge
    connect(cfg.ray)
    out = ctx.local_out("writes its model through a local folder")
    out.makedirs()
    df, image_root = manifest.read(ctx.manifest_path)
    test = df[df["split"] == "test"].reset_index(drop=True)
    if cfg.data.dataset == "synthfaces":
        s = cfg.data.synthfaces
        spec = Spec.from_yaml(s.spec) if s.spec else Spec(DEFAULT_SPEC)
        ctx.echo(f"  rendering the judge's own {j.n} faces (seed {j.seed})")
        rows = synthfaces.build(out.uri(DATA_DIR), n=j.n, size=s.size, seed=j.seed, spec=spec,
                                train=1.0, val=0.0, use_ray=True, progress=True)
        train, root = rows.reset_index(drop=True), out.path(DATA_DIR)
        source = f"a fresh SynthFaces render of {j.n} images, seed {j.seed}"
    else:
        all_train = df[df["split"] == "train"]
        train = all_train[judge_rows(all_train["path"], j.fraction, j.seed)].reset_index(drop=True)
        root = image_root
        source = f"{len(train)} train images ({j.fraction:.0%}) the labeller never sees"
    c = cfg.classifiers.model_copy(update={"backbone": j.backbone or cfg.classifiers.backbone,
                                           "epochs": j.epochs or cfg.classifiers.epochs})
    if len(train) < c.num_workers:
        raise UserError(f"the judge has {len(train)} training images, fewer than "
                        "classifiers.num_workers; raise judge.n or judge.fraction.")
    size = cfg.classifier_image_size
    h = ctx.hash
    tracking.log_params({"judge.source": source, "judge.train_rows": len(train)})
    tracking.log_dataset(train, root, "judge training images", "training")
    model = fit_classifier(c, list(train["path"]), encode(train, list(c.attributes)), root, size,
                           j.seed, h, ctx.checkpoints(), f"judge-{h}", tracking.worker_run(),
                           cfg.ray.placed("train_judge"))
    labeller_io.save(Path(out.path()), model, c.backbone, size)
    judge = Labeller.load(out.path())
    test_images = load_resized(image_root, list(test["path"]), size)
    metrics: dict[str, Any] = {"clean": score(judge, test_images, test),
                               "train_rows": len(train), "source": source}
    out.write_json(METRICS_FILE, metrics)
    tracking.log_metrics({f"clean/{k}": v for k, v in metrics["clean"].items()})
    ctx.echo(f"judge ({source}) accuracy on the test split: " + ", ".join(
        f"{a} {metrics['clean'].get(f'accuracy/{a}', float('nan')):.3f}" for a in c.attributes))
    return StageResult("train_judge", rows={"train_images": len(train)},
                       outputs={"model": out.uri(labeller_io.WEIGHTS_FILE)},
                       metrics={k: v for k, v in metrics["clean"].items() if k.startswith("accuracy/")})
