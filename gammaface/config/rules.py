"""The rules across sections: what no one section can check alone, each a function of the
whole config, called in this order by the config's own validator (config.schema). Each raises
ValueError with the sentence the user sees (it names its keys); `attributes_the_dataset_labels`
also drops defaults the dataset cannot label and returns what it dropped, as notes."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from gammaface.data.registry import get as get_attribute
from gammaface.data.registry import labelled_by
from gammaface.diffusion.presets import unet_config
from gammaface.downstream import arms
from gammaface.downstream.arms import split_arm
from gammaface.generate import methods as generation
from gammaface.generate.methods import quota_attributes, quota_draw

if TYPE_CHECKING:
    from gammaface.config.schema import Config


def attributes_the_dataset_labels(cfg: Config) -> list[str]:
    """Every attribute a classifier head, a balance cell, the target or a protected group
    names must be one the dataset labels. A default that names another one drops it (and
    says so); a value the config gives is refused, naming the key and the dataset."""
    dataset = cfg.data.dataset
    have = labelled_by(dataset)
    notes: list[str] = []
    lists = ((cfg.classifiers, "classifiers", "attributes"),
             (cfg.generate, "generate", "protected"),
             (cfg.downstream, "downstream", "protected"))
    for section, section_name, field in lists:
        values = getattr(section, field)
        unlabelled = [a for a in values if a not in have]
        if not unlabelled:
            continue
        key = f"{section_name}.{field}"
        if field in section.model_fields_set:
            raise ValueError(f"{key} names {', '.join(unlabelled)}, which dataset {dataset!r} "
                             f"does not label (it labels {', '.join(have)})")
        kept = [a for a in values if a in have]
        if not kept:
            raise ValueError(f"{key} defaults to {', '.join(values)}, none of which dataset "
                             f"{dataset!r} labels; set it to some of {', '.join(have)}")
        setattr(section, field, kept)
        notes.append(f"{key}: dataset {dataset!r} has no {', '.join(unlabelled)} labels, so "
                     f"the default drops {'it' if len(unlabelled) == 1 else 'them'} "
                     f"({', '.join(kept)}).")
    target = cfg.downstream.target
    if target not in have:
        given = "is" if "target" in cfg.downstream.model_fields_set else "defaults to"
        raise ValueError(f"downstream.target {given} {target!r}, which dataset {dataset!r} "
                         f"does not label; set it to one of {', '.join(have)}")
    heads = cfg.classifiers.attributes
    for key, names in (("downstream.target", [target]),
                       ("downstream.protected", cfg.downstream.protected),
                       ("generate.protected", cfg.generate.protected)):
        missing = [a for a in names if a not in heads]
        if missing:
            raise ValueError(f"{key} names {', '.join(missing)}, which classifiers.attributes "
                             f"({', '.join(heads)}) has no head for; the labeller must "
                             f"predict {'it' if len(missing) == 1 else 'them'}")
    return notes


def rules_across_stages(cfg: Config) -> None:
    """Rules a later stage would otherwise find only after the stages before it have run
    (and after it had cleared its own earlier result)."""
    n = cfg.ddpm.num_train_timesteps
    if not 0 < cfg.harvest.t_star < n:
        raise ValueError(f"harvest.t_star = {cfg.harvest.t_star} must lie between 1 and "
                         f"{n - 1} (ddpm.num_train_timesteps = {n})")
    t_start = cfg.generate.quota.t_start
    if t_start is not None:
        if quota_draw(cfg) != "resample":
            raise ValueError("generate.quota.t_start applies to resampled draws only; set "
                             "generate.quota.draw = 'resample' or leave t_start out")
        if not cfg.harvest.t_star <= t_start < n:
            raise ValueError(f"generate.quota.t_start = {t_start} must lie between harvest."
                             f"t_star ({cfg.harvest.t_star}) and {n - 1} "
                             f"(ddpm.num_train_timesteps = {n})")
    made = sorted({split_arm(m)[0] for m in cfg.downstream.methods} - {"baseline"}
                  - set(arms.controls()) - set(cfg.generate.methods))
    if made:
        raise ValueError(f"downstream.methods names {', '.join(made)}, which generate.methods "
                         "does not make; add it there or drop it here")
    try:
        unet_config(cfg.ddpm.preset, cfg.ddpm_resolution)
    except ValueError as exc:
        where = "ddpm.resolution" if cfg.ddpm.resolution else "data.synthfaces.size"
        raise ValueError(f"{where} = {cfg.ddpm_resolution}: {str(exc).rstrip('.')}") from None
    g = cfg.gmm
    largest, key = (g.k, "gmm.k") if g.k is not None and g.k > g.k_max else (g.k_max, "gmm.k_max")
    if largest > cfg.harvest.n:
        raise ValueError(f"{key} = {largest} is more than the harvest.n = {cfg.harvest.n} "
                         "latents a mixture is fitted to")


def judge_sees_other_faces(cfg: Config) -> None:
    if cfg.data.dataset == "synthfaces" and cfg.judge.seed == cfg.data.synthfaces.seed:
        raise ValueError(f"judge.seed = {cfg.judge.seed} equals data.synthfaces.seed, so the "
                         "judge would learn from the very faces of the dataset; give it "
                         "another seed")


def quota_cells_are_labelled(cfg: Config) -> None:
    """A quota set keeps images by the labeller's heads, so its cells must be ones the
    classifiers are trained for, and every share must name one of those cells."""
    if not any(generation.in_family(m, "quota") for m in cfg.generate.methods):
        return
    attrs = quota_attributes(cfg)
    missing = [a for a in attrs if a not in cfg.classifiers.attributes]
    if missing:
        key = "generate.quota.cells" if cfg.generate.quota.cells else "generate.protected"
        raise ValueError(f"{key} names {', '.join(missing)}, which the classifiers are not "
                         "trained for (classifiers.attributes); a quota set is kept by them")
    shares = cfg.generate.quota.shares or {}
    names = {":".join(c) for c in itertools.product(*(get_attribute(a).classes for a in attrs))}
    unknown = sorted(set(shares) - names)
    if unknown:
        raise ValueError(f"generate.quota.shares names the cell {unknown[0]!r}, which is not a "
                         f"cell of {':'.join(attrs)} (cells look like {sorted(names)[0]!r})")


def features_space_is_resampled(cfg: Config) -> None:
    if cfg.gmm.space == "features":
        if cfg.harvest.source != "forward":
            raise ValueError("gmm.space = 'features' embeds the source images, so it needs "
                             "harvest.source = 'forward'")
        for key, draw in (("generate.draw", cfg.generate.draw),
                          ("generate.quota.draw", cfg.generate.quota.draw)):
            if draw == "gaussian":
                raise ValueError(f"gmm.space = 'features' cannot be sampled as a Gaussian "
                                 f"(features do not map back to images), so it needs {key} = "
                                 "'resample'")
