"""harvest: latents x_t at t*, streamed by Ray Data to sharded storage."""

from gammaface.stages import Stage, fixed, section_keys

STAGE = Stage("harvest", folder="latents", needs=fixed("train_ddpm"),
              keys=lambda cfg: (*section_keys("harvest", "batch_size", "concurrency",
                                              "num_gpus"), "seed"),
              placed=True)
