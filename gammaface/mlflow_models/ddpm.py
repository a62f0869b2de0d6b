"""The DDPM as an MLflow model: one image per input row, drawn from x_T by diffusers' DDIM
pipeline with the row's `seed` (the same seed gives the same face). Param `steps`: DDIM steps
(default 50). Output: uint8 images (N, H, W, 3)."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class DDPMModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from diffusers import DDIMPipeline

        self.pipe = DDIMPipeline.from_pretrained(context.artifacts["ddpm"])
        self.pipe.set_progress_bar_config(disable=True)

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> np.ndarray:
        import torch

        seeds = [int(s) for s in np.asarray(model_input["seed"])]
        if not seeds:
            size = self.pipe.unet.config.sample_size
            return np.zeros((0, size, size, 3), np.uint8)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        out = self.pipe(batch_size=len(seeds), generator=gens, output_type="np",
                        num_inference_steps=int((params or {}).get("steps", 50))).images
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


mlflow.models.set_model(DDPMModel())
