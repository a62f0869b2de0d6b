"""train_judge: the classifier that measures every generated set's balance and chooses nothing."""

from gammaface.stages import Stage, fixed, section_keys

STAGE = Stage("train_judge", folder="judge", needs=fixed("prepare"),
              keys=lambda cfg: (*section_keys("judge"),
                                *section_keys("classifiers", "max_failures", "use_gpu",
                                              "backbone", "epochs"),
                                "data.synthfaces.size", "data.synthfaces.spec", "ddpm.preset",
                                "ddpm.resolution"),
              placed=True)
