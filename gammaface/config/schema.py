"""The whole config: its sections, the rules across them, and the facts read off it (hashes,
the DDPM's resolution, a quota set's size)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import PrivateAttr, model_validator

from gammaface.config import rules
from gammaface.config.sections import (ClassifiersConfig, DataConfig, DdpmConfig, DownstreamConfig,
                                       GenerateConfig, GmmConfig, HarvestConfig, JudgeConfig,
                                       LabelConfig, MlflowConfig, RayConfig, Section)
from gammaface.diffusion.presets import default_resolution


class Config(Section):
    name: str = "gammaface"
    workdir: str = "runs/default"
    seed: int = 0
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()
    data: DataConfig = DataConfig()
    ddpm: DdpmConfig = DdpmConfig()
    harvest: HarvestConfig = HarvestConfig()
    gmm: GmmConfig = GmmConfig()
    generate: GenerateConfig = GenerateConfig()
    classifiers: ClassifiersConfig = ClassifiersConfig()
    judge: JudgeConfig = JudgeConfig()
    label: LabelConfig = LabelConfig()
    downstream: DownstreamConfig = DownstreamConfig()
    # what loading changed in the defaults, for the config printout (never part of a hash)
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return list(self._notes)

    @model_validator(mode="after")
    def _rules_across_sections(self) -> Config:
        """What no one section can check alone (config.rules), in order: the first broken rule
        is the sentence the user sees."""
        self._notes = rules.attributes_the_dataset_labels(self)
        rules.rules_across_stages(self)
        rules.judge_sees_other_faces(self)
        rules.quota_cells_are_labelled(self)
        rules.features_space_is_resampled(self)
        return self

    @property
    def ddpm_resolution(self) -> int:
        """The DDPM's image side: ddpm.resolution, else the size SynthFaces renders at (the
        tiny test preset keeps its own), else the preset's."""
        if self.ddpm.resolution:
            return self.ddpm.resolution
        if self.data.dataset == "synthfaces" and self.ddpm.preset != "tiny":
            return self.data.synthfaces.size
        return default_resolution(self.ddpm.preset)

    @property
    def classifier_image_size(self) -> int:
        """The side the attribute and downstream classifiers see: classifiers.image_size, else
        the DDPM's, so the labeller sees images at the size they are generated."""
        return self.classifiers.image_size or self.ddpm_resolution

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections (dotted paths), for deciding what must rerun."""
        payload = {s: _lookup(self.model_dump(mode="json"), s) for s in sections}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for MLflow params and `config show`."""
        return flatten(self.model_dump(mode="json"))


def quota_n(cfg: Config) -> int:
    """The images every quota set keeps when it fills."""
    return cfg.generate.quota.n or cfg.generate.n


def quota_confidence(cfg: Config) -> float:
    """The pseudo-label confidence a quota set keeps an image at."""
    q = cfg.generate.quota.min_confidence
    return cfg.label.min_confidence if q is None else q


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


