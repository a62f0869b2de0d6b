"""The attribute classifier as an MLflow model. Input: uint8 images (N, H, W, 3) at its own
resolution (others are resized); output: one row per image, the class of every attribute and
its confidence (`<attribute>_conf`)."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class LabellerModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from gammaface.classifiers.labeller import Labeller

        self.labeller = Labeller.load(context.artifacts["classifier"])

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> pd.DataFrame:
        return self.labeller.frame(np.asarray(model_input, dtype=np.uint8))


mlflow.models.set_model(LabellerModel())
