"""Stage `train_classifiers`: the manifest's train split -> `classifiers/` (model.safetensors,
classifier.json, metrics.json).

One ResNet with a head per attribute, trained in Ray Train's TorchTrainer (DDP over gloo on CPU
workers). The test split is scored twice: as it is, and degraded the way generated images are
(blur, low contrast and saturation, noise), since the labeller's job is labelling generated
faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from gammaface.run import layout, tracking
from gammaface.classifiers import labeller as labeller_io
from gammaface.classifiers.labeller import Labeller
from gammaface.classifiers.labels import encode
from gammaface.classifiers.scores import degraded, score
from gammaface.classifiers.judge import judge_rows
from gammaface.classifiers.train_loop import fit_classifier
from gammaface.data import manifest
from gammaface.common.errors import UserError
from gammaface.common.images import load_resized
from gammaface.distributed.runtime import connect
from gammaface.run.stage import StageContext, StageResult

METRICS_FILE = "metrics.json"


def run(ctx: StageContext) -> StageResult:
    cfg, workdir = ctx.cfg, ctx.workdir
    c = cfg.classifiers
    connect(cfg.ray)
    out = ctx.local_out("writes its model through a local folder")
    out.makedirs()
    df, image_root = manifest.read(ctx.manifest_path)
    train = df[df["split"] == "train"].reset_index(drop=True)
    test = df[df["split"] == "test"].reset_index(drop=True)
    unlabelled = [a for a in c.attributes if train[a].isna().all()]
    if unlabelled:
        raise UserError(f"classifiers.attributes names {', '.join(unlabelled)}, but no train image "
                        f"of {workdir.uri(layout.manifest_path(cfg))} has "
                        f"{'that label' if len(unlabelled) == 1 else 'those labels'}; drop "
                        f"{'it' if len(unlabelled) == 1 else 'them'} from classifiers.attributes.")
    if len(train) < c.num_workers:
        raise UserError(f"the train split has {len(train)} images, fewer than "
                        "classifiers.num_workers.")
    size = cfg.classifier_image_size
    h = ctx.hash
    if cfg.data.dataset != "synthfaces":  # the judge's share of the train split is never seen here
        train = train[~judge_rows(train["path"], cfg.judge.fraction, cfg.judge.seed)]
        train = train.reset_index(drop=True)
    tracking.log_params({"classifiers.image_size_used": size, "classifiers.train_rows": len(train)})
    tracking.log_dataset(train, ctx.manifest_path, "labeller train split", "training")
    model = fit_classifier(c, list(train["path"]), encode(train, list(c.attributes)), image_root,
                           size, cfg.seed, h, ctx.checkpoints(), f"classifiers-{h}",
                           tracking.worker_run(), cfg.ray.placed("train_classifiers"))
    labeller_io.save(Path(out.path()), model, c.backbone, size)

    labeller = Labeller.load(out.path())
    test_images = load_resized(image_root, list(test["path"]), size)
    metrics: dict[str, Any] = {"clean": score(labeller, test_images, test),
               "degraded": score(labeller, degraded(test_images), test), "test_rows": len(test)}
    out.write_json(METRICS_FILE, metrics)
    for kind in ("clean", "degraded"):
        tracking.log_metrics({f"{kind}/{k}": v for k, v in metrics[kind].items()})
    tracking.log_artifact(out.path(METRICS_FILE))
    tracking.log_artifact(out.path(labeller_io.INFO_FILE))
    tracking.register_labeller(out.path(), [labeller_io.INFO_FILE, labeller_io.WEIGHTS_FILE], size,
                               list(labeller.attributes), tracking.registered_name(cfg, "labeller"))
    ctx.echo("classifier accuracy on the test split (clean / degraded): " + ", ".join(
        f"{a} {metrics['clean'].get(f'accuracy/{a}', float('nan')):.3f}/"
        f"{metrics['degraded'].get(f'accuracy/{a}', float('nan')):.3f}" for a in c.attributes))
    return StageResult("train_classifiers", rows={"train_images": len(train), "test_images": len(test)},
                       outputs={"model": out.uri(labeller_io.WEIGHTS_FILE),
                                "metrics": out.uri(METRICS_FILE)},
                       metrics={k: v for k, v in metrics["clean"].items() if k.startswith("accuracy/")})
