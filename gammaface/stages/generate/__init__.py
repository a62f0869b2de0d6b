"""generate: every method's set, rendered by an actor pool; quota sets kept by label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gammaface.generate import methods as generation
from gammaface.generate.methods import uses_labeller
from gammaface.stages import Stage, section_keys

if TYPE_CHECKING:
    from gammaface.config import Config


def _quota(cfg: Config) -> bool:
    return any(generation.in_family(m, "quota") for m in cfg.generate.methods)


def _needs(cfg: Config) -> tuple[str, ...]:
    """The labeller is read where the component compositions cannot come from source labels
    (reverse latents under any mixture method) and where quota sets keep images by label."""
    return ("gmm_search", "train_classifiers") if uses_labeller(cfg) or _quota(cfg) else ("gmm_search",)


def _keys(cfg: Config) -> tuple[str, ...]:
    own = section_keys("generate", "batch_size", "concurrency", "num_gpus")
    return ((*own, "label.min_confidence") if _quota(cfg) and cfg.generate.quota.min_confidence is None
            else own)


STAGE = Stage("generate", folder="generated", needs=_needs, keys=_keys, placed=True)
