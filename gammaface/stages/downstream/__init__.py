"""downstream: classifiers trained on real plus generated data, scored for accuracy and bias."""

from gammaface.stages import Stage, fixed, section_keys

STAGE = Stage("downstream", folder="downstream", needs=fixed("pseudo_label"),
              keys=lambda cfg: (*section_keys("downstream", "num_workers", "use_gpu",
                                              "gpus_per_job", "max_failures"),
                                "label.min_confidence", "classifiers.image_size"),
              placed=True)
