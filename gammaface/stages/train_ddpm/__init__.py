"""train_ddpm: the DDPM, trained by Ray Train."""

from gammaface.stages import Stage, fixed, section_keys

STAGE = Stage("train_ddpm", folder="ddpm", needs=fixed("prepare"),
              keys=lambda cfg: (*section_keys("ddpm", "max_failures", "log_every",
                                              "cpus_per_worker"), "seed"),
              placed=True, makes="ddpm")
