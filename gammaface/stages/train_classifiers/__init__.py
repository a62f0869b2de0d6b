"""train_classifiers: the labeller, one ResNet with a head per attribute, trained by Ray Train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gammaface.stages import Stage, fixed, section_keys

if TYPE_CHECKING:
    from gammaface.config import Config


def _keys(cfg: Config) -> tuple[str, ...]:
    own = (*section_keys("classifiers", "max_failures", "use_gpu"), "seed", "ddpm.preset",
           "ddpm.resolution")
    # on real data the judge's share of the train split is held out from the labeller
    return own if cfg.data.dataset == "synthfaces" else (*own, "judge.fraction", "judge.seed")


STAGE = Stage("train_classifiers", folder="classifiers", needs=fixed("prepare"), keys=_keys,
              placed=True, makes="labeller")
