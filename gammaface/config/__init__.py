"""The typed configuration: YAML in, validated pydantic models out.

Every key has a default (the paper's setting where the paper gives one), unknown keys are
refused, and a bad value is reported as one sentence naming the key path. `sections` holds one
model per section (each checks its own keys), `rules` what holds across sections, `schema` the
whole Config and the facts read off it, `loading` the YAML file and its error sentences.
"""

from gammaface.config.loading import dump_yaml, from_dict, load
from gammaface.config.schema import Config, flatten, quota_confidence, quota_n
from gammaface.config.sections import (Backbone, ClassifiersConfig, DataConfig, DdpmConfig,
                                       DownstreamConfig, DownstreamEvalConfig, FairFaceConfig,
                                       FfhqConfig, GenerateConfig, GmmConfig, HarvestConfig,
                                       JudgeConfig, LabelConfig, LatentSource, MlflowConfig,
                                       QuotaConfig, RayConfig, Section, SplitFractions,
                                       SynthFacesConfig)

__all__ = ["Backbone", "ClassifiersConfig", "Config", "DataConfig", "DdpmConfig",
           "DownstreamConfig", "DownstreamEvalConfig", "FairFaceConfig", "FfhqConfig",
           "GenerateConfig", "GmmConfig", "HarvestConfig", "JudgeConfig", "LabelConfig",
           "LatentSource", "MlflowConfig", "QuotaConfig", "RayConfig", "Section",
           "SplitFractions", "SynthFacesConfig", "dump_yaml", "flatten", "from_dict", "load",
           "quota_confidence", "quota_n"]
