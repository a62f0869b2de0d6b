"""A trained attribute classifier on disk, and what it says about images.

The folder holds `model.safetensors` and `classifier.json` (backbone, attributes with their
classes, input size); nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from gammaface.classifiers.model import AttributeNet
from gammaface.data import registry
from gammaface.common.images import load_resized, to_model_space
from gammaface.common.errors import UserError

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "classifier.json"


def save(folder: Path, model: AttributeNet, backbone: str, image_size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(folder / WEIGHTS_FILE))
    info = {"backbone": backbone, "image_size": image_size, "embed_dim": model.embed_dim,
            "attributes": {a: list(registry.get(a).classes) for a in model.attributes}}
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))


@dataclass
class Prediction:
    classes: np.ndarray  # (N,) class index
    confidence: np.ndarray  # (N,) softmax probability of that class


class Labeller:
    def __init__(self, model: AttributeNet, image_size: int, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.image_size = image_size
        self.device = device
        self.attributes = model.attributes

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | None = None) -> Labeller:
        folder = Path(folder)
        if not (folder / INFO_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise UserError(f"{folder} holds no trained attribute classifier; run the "
                            "train_classifiers stage first.")
        info = json.loads((folder / INFO_FILE).read_text())
        for name, classes in info["attributes"].items():
            if list(registry.get(name).classes) != classes:
                raise UserError(f"{folder / INFO_FILE}: the classes of {name!r} differ from this "
                                "version's registry; retrain the classifiers.")
        model = AttributeNet(info["backbone"], list(info["attributes"]), info["image_size"])
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return cls(model, int(info["image_size"]), device or torch.device("cpu"))

    def _batches(self, images: np.ndarray | torch.Tensor, batch_size: int):
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            x = chunk if isinstance(chunk, torch.Tensor) else to_model_space(chunk)
            if x.shape[-1] != self.image_size:
                x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size),
                                                    mode="area" if x.shape[-1] > self.image_size
                                                    else "bilinear")
            yield x.to(self.device)

    @torch.no_grad()
    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256
                      ) -> dict[str, np.ndarray]:
        """(N, classes) softmax probabilities per attribute; images are uint8 NHWC or float
        NCHW in [-1, 1]."""
        parts: dict[str, list[torch.Tensor]] = {a: [] for a in self.attributes}
        for x in self._batches(images, batch_size):
            for name, logits in self.model(x).items():
                parts[name].append(torch.softmax(logits.float(), dim=1).cpu())
        return {name: (torch.cat(chunks) if chunks
                       else torch.zeros(0, registry.get(name).n_classes)).numpy()
                for name, chunks in parts.items()}

    def predict(self, images: np.ndarray | torch.Tensor, batch_size: int = 256
                ) -> dict[str, Prediction]:
        """Class and confidence per attribute."""
        return {name: Prediction(p.argmax(axis=1), p.max(axis=1))
                for name, p in self.probabilities(images, batch_size).items()}

    def frame(self, images: np.ndarray | torch.Tensor) -> pd.DataFrame:
        """One row per image: the class name of every attribute and its confidence column."""
        from gammaface.classifiers.labels import conf_column

        out = {}
        for name, p in self.predict(images).items():
            out[name] = np.asarray(registry.get(name).classes, dtype=object)[p.classes]
            out[conf_column(name)] = p.confidence.astype(np.float32)
        return pd.DataFrame(out)

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        chunks = [self.model.embed(x).float().cpu() for x in self._batches(images, batch_size)]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.model.embed_dim), np.float32)


class LabelBatch:
    """Ray Data actor: the classifier loaded once; adds class and confidence per attribute."""

    def __init__(self, classifier_dir: str, image_root: str, threads: int, use_gpu: bool) -> None:
        torch.set_num_threads(threads)
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.labeller = Labeller.load(classifier_dir, device)
        self.image_root = image_root

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        images = load_resized(self.image_root, list(batch["path"]), self.labeller.image_size)
        return label_frame(self.labeller, images, batch)


def label_frame(labeller: Labeller, images: np.ndarray, rows: pd.DataFrame) -> pd.DataFrame:
    labels = labeller.frame(images)
    labels.index = rows.index
    return pd.concat([rows, labels], axis=1)
