"""gmm_search: the mixture over the harvested latents, K chosen by BIC."""

from gammaface.stages import Stage, section_keys

STAGE = Stage("gmm_search", folder="gmm",
              # in the labeller's feature space the latents' source images are embedded first
              needs=lambda cfg: (("harvest", "train_classifiers") if cfg.gmm.space == "features"
                                 else ("harvest",)),
              keys=lambda cfg: (*section_keys("gmm", "backend"), "seed"),
              placed=True, makes="mixture")
