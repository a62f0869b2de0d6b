"""audit: every set as the judge sees it (balance three ways, agreement, novelty)."""

from gammaface.stages import Stage, fixed

STAGE = Stage("audit", folder="audit", needs=fixed("pseudo_label", "train_judge"),
              keys=fixed("generate.protected", "generate.quota.cells", "label.bootstrap", "seed"))
