"""prepare: the dataset's images and manifest, from SynthFaces' spec or a real dataset's folders."""

from gammaface.run.layout import dataset_dir
from gammaface.stages import Stage, fixed

STAGE = Stage("prepare", folder=dataset_dir, needs=fixed(),
              keys=lambda cfg: ("data.dataset", f"data.{cfg.data.dataset}"), makes="data")
