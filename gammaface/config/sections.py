"""The config's sections: one pydantic model per section, each checking its own keys.

Every key has a default (the paper's setting where the paper gives one), unknown keys are
refused, and a bad value is reported as one sentence naming the key path (config.loading).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gammaface.data.registry import ATTRIBUTE_NAMES
from gammaface.downstream import arms
from gammaface.downstream.arms import split_arm
# the generation methods' registry: the one list of their names, which `generate.methods` and
# the downstream arms are checked against
from gammaface.generate import methods as generation

PositiveInt = Field(gt=0)

class Section(BaseModel):
    # NaN and infinities are refused everywhere: a `.nan` passes every range check silently
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`harvest.n: true` would otherwise become 1."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _is_bool(value, nested=True) and _numeric(field.annotation):
            raise ValueError(f"takes a number, not {json.dumps(value)}")
        return value


def _is_bool(value: Any, nested: bool = False) -> bool:
    if isinstance(value, bool):
        return True
    return nested and isinstance(value, list) and any(isinstance(v, bool) for v in value)


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is a number (or list of numbers) and not also a bool."""
    import typing

    args = typing.get_args(annotation)
    if annotation in (int, float):
        return True
    if annotation is bool or bool in args:
        return False
    return any(_numeric(a) for a in args)


class RayConfig(Section):
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray started on the spot
    num_cpus: int | None = Field(default=None, gt=0)
    object_store_memory: int | None = Field(default=None, gt=0)  # bytes, local Ray only
    # custom Ray resources each task, actor or training worker of a stage asks for, by stage:
    # {generate: {a100: 1}} runs generate's actors only on nodes started with `--resources
    # '{"a100": N}'` (a node group of the cluster). Where work runs, never what it produces:
    # no stage's resume key holds it.
    # Which stages may be named is the stages' own declaration (gammaface.stages
    # check_placement, called by the pipeline and the command line); the amounts are checked here.
    resources: dict[str, dict[str, float]] = {}

    @field_validator("resources")
    @classmethod
    def _placed(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for stage, wanted in value.items():
            for name, amount in wanted.items():
                if name in ("CPU", "GPU", "memory", "object_store_memory"):
                    raise ValueError(f"{stage}.{name}: CPUs, GPUs and memory come from the "
                                     "stage's own settings; name custom resources only")
                if not amount > 0:
                    raise ValueError(f"{stage}.{name} must be a positive amount, not {amount}")
        return value

    def placed(self, stage: str) -> dict[str, float]:
        """The custom resources `stage`'s work asks for (none: anywhere)."""
        return dict(self.resources.get(stage, {}))


class MlflowConfig(Section):
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite in the workdir
    experiment: str = "gammaface"
    # seconds between samples of CPU, memory, disk and network (and GPU where NVML is installed)
    # on the pipeline's run; none: not recorded
    system_metrics: float | None = Field(default=10.0, gt=0)


class SplitFractions(Section):
    train: float = Field(default=0.8, ge=0, le=1)
    val: float = Field(default=0.1, ge=0, le=1)
    test: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class SynthFacesConfig(Section):
    n: int = Field(default=6000, gt=0)
    size: int = Field(default=32, ge=16, le=128)
    seed: int = 0
    spec: str | None = None  # path to a joint-distribution YAML; None: the biased default
    splits: SplitFractions = SplitFractions()
    balanced_test: bool = False  # test split drawn with every attribute uniform and independent


class FfhqConfig(Section):
    images: str | None = None
    features: str | None = None
    variant: Literal["images1024x1024", "thumbnails128x128"] = "thumbnails128x128"


class FairFaceConfig(Section):
    labels: str | None = None
    images: str | None = None


class DataConfig(Section):
    dataset: Literal["synthfaces", "ffhq", "fairface"] = "synthfaces"
    synthfaces: SynthFacesConfig = SynthFacesConfig()
    ffhq: FfhqConfig = FfhqConfig()
    fairface: FairFaceConfig = FairFaceConfig()

    @model_validator(mode="after")
    def _sources_given(self) -> DataConfig:
        if self.dataset == "ffhq" and (self.ffhq.images is None or self.ffhq.features is None):
            raise ValueError("dataset 'ffhq' needs data.ffhq.images and data.ffhq.features")
        if self.dataset == "fairface" and (self.fairface.labels is None
                                           or self.fairface.images is None):
            raise ValueError("dataset 'fairface' needs data.fairface.labels and data.fairface.images")
        return self


class DdpmConfig(Section):
    preset: Literal["tiny", "small", "32", "64", "128"] = "small"
    resolution: int | None = Field(default=None, gt=0)  # None: the dataset's size, else the preset's
    num_train_timesteps: int = Field(default=1000, gt=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    train_steps: int = Field(default=3000, gt=0)
    batch_size: int = Field(default=64, gt=0)  # global: split across workers
    learning_rate: float = Field(default=1e-4, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    # after the warmup: constant, or a cosine from learning_rate down to 0 at train_steps
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(default=1.0, gt=0)
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    num_workers: int = Field(default=1, gt=0)
    cpus_per_worker: int | None = Field(default=None, gt=0)  # None: the local CPUs shared out
    use_gpu: bool = False
    max_failures: int = Field(default=1, ge=0)
    checkpoint_every: int = Field(default=500, gt=0)
    sample_every: int = Field(default=1000, ge=0)  # 0: only the final sample grid
    sample_steps: int = Field(default=50, gt=0)  # DDIM steps of the sample grids
    log_every: int = Field(default=10, gt=0)


LatentSource = Literal["forward", "reverse"]  # training images noised on, or the sampler stopped


class HarvestConfig(Section):
    n: int = Field(default=2000, gt=0)
    t_star: int = Field(default=200, gt=0)  # snapped to the grid of `steps` DDIM steps
    source: LatentSource = "forward"
    steps: int = Field(default=50, gt=0)  # DDIM steps of a full run; reverse harvest walks T -> t*
    eta: float = Field(default=0.0, ge=0, le=1)
    batch_size: int = Field(default=64, gt=0)
    concurrency: int = Field(default=1, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)


class GmmConfig(Section):
    k_min: int = Field(default=1, gt=0)
    k_max: int = Field(default=11, gt=0)
    k: int | None = Field(default=None, gt=0)  # forces K instead of choosing it by BIC
    backend: Literal["auto", "cuml", "torch", "sklearn"] = "auto"
    space: Literal["pixels", "pca", "features"] = "pixels"
    pca_dim: int | None = Field(default=None, gt=0)
    tol: float = Field(default=1e-3, gt=0)
    reg_covar: float = Field(default=1e-6, ge=0)
    max_iter: int = Field(default=100, gt=0)
    n_init: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _k_range(self) -> GmmConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"the K range is empty: k_min={self.k_min} is above k_max={self.k_max}")
        return self


class QuotaConfig(Section):
    """What a quota set holds: `n` images (none: `generate.n`) over the cells of `cells` (default the
    protected attributes), equal per cell or in proportion to `shares` ("class:class:..." of
    those attributes in order; cells not named get none), kept while at most `budget` renders
    per kept image are spent. An image is kept only if every attribute of its cell has at least
    `min_confidence` (none: `label.min_confidence`, which also filters downstream). The mixture
    proposals draw by `draw` (none: `generate.draw`): `resample` finishes noised training faces,
    near copies of them unless `t_start` noises them far enough up that the DDPM makes new
    faces; `gaussian` draws new faces from the components themselves."""

    # none: generate.n; a quota set costs many renders per kept image, so it may be sized apart
    # from the sets that cost one render per image
    n: int | None = Field(default=None, gt=0)
    cells: list[str] | None = None
    shares: dict[str, float] | None = None
    min_confidence: float | None = Field(default=None, ge=0, le=1)  # none: label.min_confidence
    budget: float = Field(default=20.0, ge=1)
    max_rounds: int = Field(default=12, gt=0)
    draw: Literal["gaussian", "resample"] | None = None  # none: generate.draw
    # resampled draws only: the level a picked source is noised to and finished from (none:
    # the harvest's t*); higher levels keep less of the source face, so the faces are new
    t_start: int | None = Field(default=None, gt=0)
    # Early exit: after each of these numbers of UNet evaluations of a render's finishing run,
    # the labeller reads its x0 prediction, and a render read as a cell that was full when its
    # round was planned (or as less sure than `exit_below`) stops there instead of finishing.
    # Empty: every render is finished. Measured on the demo (benchmarks/quota_tradeoff.py): a
    # check after the first evaluation cut UNet evaluations per kept image from 157 to 54 and
    # the quota stages' time from 96 to 54 s at the same budget, keeping 210 images, not 220;
    # after the third, 82 and 66 s, 216 kept
    exit_checks: list[int] = [1]
    exit_below: float = Field(default=0.0, ge=0, le=1)

    _known_cells = field_validator("cells")(
        lambda cls, v: None if v is None else _protected_list(v))

    @field_validator("exit_checks")
    @classmethod
    def _increasing_checks(cls, value: list[int]) -> list[int]:
        if any(v <= 0 for v in value):
            raise ValueError("each check is a number of UNet evaluations, at least 1")
        if value != sorted(set(value)):
            raise ValueError("give the checks in increasing order, each once")
        return value

    @field_validator("shares")
    @classmethod
    def _positive_shares(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        bad = [k for k, v in value.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"the share of {bad[0]!r} is not a finite number")
        bad = [k for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"the share of {bad[0]!r} is negative")
        if not any(v > 0 for v in value.values()):
            raise ValueError("name at least one cell with a positive share")
        if not math.isfinite(sum(value.values())):  # 1e308 twice: the proportions overflow
            raise ValueError("the shares are too large to add up; give them as proportions")
        return value


class GenerateConfig(Section):
    n: int = Field(default=2000, gt=0)
    methods: list[str] = list(generation.DEFAULTS)
    quota: QuotaConfig = QuotaConfig()
    draw: Literal["gaussian", "resample"] = "gaussian"
    eta: float = Field(default=0.0, ge=0, le=1)
    temperature: float = Field(default=1.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    steps: int = Field(default=50, gt=0)
    shard_size: int = Field(default=500, gt=0)
    batch_size: int = Field(default=64, gt=0)
    concurrency: int = Field(default=1, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    seed: int = 0
    protected: list[str] = ["age", "gender", "race"]  # the attributes whose balance is measured
    pilot: int = Field(default=64, gt=0)  # images per component labelled when no source labels
    grid: int = Field(default=8, gt=0)  # images per component in the per-component grids

    _known_protected = field_validator("protected")(lambda cls, v: _protected_list(v))

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one generation method")
        if len(set(value)) != len(value):
            raise ValueError("a method is named twice")
        known = generation.names()
        for m in value:
            if m not in known:
                raise ValueError(f"unknown generation method {m!r}; expected one of {', '.join(known)}")
        return value


Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101"]


class ClassifiersConfig(Section):
    backbone: Backbone = "resnet101"  # the paper's choice
    attributes: list[str] = list(ATTRIBUTE_NAMES)
    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=1e-4, gt=0)  # Adam, as in the paper
    augment: float = Field(default=0.5, ge=0, le=1)  # share of images degraded like generated ones
    image_size: int | None = Field(default=None, ge=8)  # None: the DDPM's resolution
    num_workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    max_failures: int = Field(default=1, ge=0)

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, value: list[str]) -> list[str]:
        return [_known_attribute(a) for a in value]


class JudgeConfig(Section):
    """The classifier that measures the balance of every generated set and takes no part in
    making or choosing them. SynthFaces: trained on a fresh render of `n` images (seed `seed`,
    which must differ from the dataset's); FFHQ and FairFace: on `fraction` of the train split,
    which the labeller then never sees. Backbone and epochs default to the classifiers'."""

    n: int = Field(default=3000, gt=1)
    seed: int = 7
    fraction: float = Field(default=0.2, gt=0, lt=1)
    backbone: Backbone | None = None
    epochs: int | None = Field(default=None, gt=0)


class LabelConfig(Section):
    min_confidence: float = Field(default=0.0, ge=0, le=1)  # consumers drop rows below it
    batch_size: int = Field(default=256, gt=0)
    concurrency: int = Field(default=1, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    bootstrap: int = Field(default=200, gt=1)  # resamples behind each balance error bar


class DownstreamEvalConfig(Section):
    """The images every downstream classifier is scored on. SynthFaces renders a fresh set with
    `n_per_cell` images in every target x protected cell (its own label and render streams, so
    no image is shared with train, val or test); FFHQ and FairFace use the test split, cut to
    equal counts per cell (at most `n_per_cell`) when `balance` is set."""

    n_per_cell: int = Field(default=250, gt=0)
    seed: int = 1
    balance: bool = False


class DownstreamConfig(Section):
    target: str = "smile"
    protected: list[str] = ["age", "gender"]
    n_per_class: list[int] = [5000]  # the paper: 5000 per class for binary targets
    ratios: list[float] = [0.0, 0.3, 0.5, 0.7, 1.0]  # generated share of the training set
    methods: list[str] = ["baseline", "unconditional", "single_gaussian", "gmm_weighted", "gmm"]
    # augment (the paper's): every real image kept, generated ones added to make `ratio` of the
    # set; replace: the set's size fixed, generated images in place of real ones; fill: added
    # generated images chosen by pseudo-label to even out the target x protected cells
    mixing: str = "augment"  # a rule of the arms' registry (`downstream.arms`) that is no control
    eval: DownstreamEvalConfig = DownstreamEvalConfig()
    seeds: int = Field(default=3, gt=0)
    backbone: Backbone = "resnet101"
    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=1e-4, gt=0)
    # jobs trained at once, each in its own Ray task, handed out as the cluster frees up
    num_workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    # a GPU's share per job: a fraction lets several small classifiers share one GPU
    gpus_per_job: float = Field(default=1.0, gt=0, le=1)
    max_failures: int = Field(default=1, ge=0)  # retries of a failed job, each job on its own

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        return _known_attribute(value)

    _known_protected = field_validator("protected")(lambda cls, v: _protected_list(v))

    @field_validator("n_per_class", mode="before")
    @classmethod
    def _one_or_many_sizes(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("n_per_class")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        for v in value:
            if v <= 0:
                raise ValueError(f"every size must be positive, got {v}")
        return value

    @field_validator("ratios")
    @classmethod
    def _ratios_in_unit_interval(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("name at least one ratio")
        if len(set(value)) != len(value):
            raise ValueError("a ratio is named twice")
        for r in value:
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"every ratio must lie in [0, 1], got {r:g}")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        generated, rules = generation.names(), arms.mixing_rules()
        allowed = ("baseline", *generated, *arms.controls())
        if not value:
            raise ValueError("name at least one method")
        if len(set(value)) != len(value):
            raise ValueError("a method is named twice")
        for m in value:
            source, rule = split_arm(m)
            if source not in allowed:
                raise ValueError(f"unknown method {m!r}; expected one of {', '.join(allowed)}, "
                                 f"a generated set optionally with ':' and one of "
                                 f"{', '.join(rules)}")
            if rule is not None and (source not in generated or rule not in rules):
                raise ValueError(f"method {m!r}: only a generated set takes a mixing rule, one of "
                                 f"{', '.join(rules)}")
        return value

    @field_validator("mixing")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if value not in arms.mixing_rules():
            raise ValueError(f"unknown mixing rule {value!r}; expected one of "
                             f"{', '.join(arms.mixing_rules())}")
        return value

    @model_validator(mode="after")
    def _target_not_protected(self) -> DownstreamConfig:
        if self.target in self.protected:
            raise ValueError(f"the target {self.target!r} cannot also be a protected attribute")
        return self


def _protected_list(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("at least one protected attribute is needed")
    if len(set(value)) != len(value):
        raise ValueError("an attribute is named twice")
    return [_known_attribute(a) for a in value]


def _known_attribute(name: str) -> str:
    if name not in ATTRIBUTE_NAMES:
        raise ValueError(f"unknown attribute {name!r}; expected one of {', '.join(ATTRIBUTE_NAMES)}")
    return name

