"""pseudo_label: every generated set labelled by the labeller, and its balance."""

from gammaface.stages import Stage, fixed

STAGE = Stage("pseudo_label", folder="labels", needs=fixed("generate", "train_classifiers"),
              keys=fixed("generate.protected", "label.bootstrap"), placed=True)
