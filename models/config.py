"""RunConfig: the one typed description of a run, read by the CLI, the HTTP API and the trainer alike.

Every field has a default that trains something sensible on the built-in `mnist5k` set in about a minute on
two CPU cores. Component names and their parameters are checked against the registries, so an error names the
field and lists what is allowed.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    # Unknown fields are errors: a typo in a config must not silently train the default. NaN and ±inf are
    # refused as "not a finite number" before any range check could call them "greater than" a bound.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


NAME_MAX = 64  # component names are registry keys; a longer one can only be a mistake (or a huge echo)
SEED_MAX = 2**31 - 1
PARAMS_MAX = 32  # parameters of one component; every registered component takes far fewer
ParamName = Annotated[str, Field(max_length=NAME_MAX)]


class DistanceConfig(_Strict):
    name: str = Field("euclidean", max_length=NAME_MAX)  # euclidean | squared_euclidean | cosine | snr | mahalanobis | relative_mahalanobis
    normalize: bool = False  # L2-normalise embeddings before measuring; explicit, never implied
    params: dict[ParamName, Any] = Field(default_factory=dict, max_length=PARAMS_MAX)


class LossConfig(_Strict):
    name: str = Field("triplet", max_length=NAME_MAX)
    params: dict[ParamName, Any] = Field(default_factory=dict, max_length=PARAMS_MAX)  # e.g. {"margin": 0.2}


class MinerConfig(_Strict):
    name: str = Field("semihard", max_length=NAME_MAX)  # none | all | semihard | batch_hard | multi_similarity
    params: dict[ParamName, Any] = Field(default_factory=dict, max_length=PARAMS_MAX)


class RegularizerConfig(_Strict):
    name: str = Field(max_length=NAME_MAX)  # det | density | zero_mean | l2_embedding | l2_weights
    weight: float = Field(0.1, ge=0.0, le=1e3)  # λ; the term added to the loss is weight × value
    params: dict[ParamName, Any] = Field(default_factory=dict, max_length=PARAMS_MAX)


class FlowConfig(_Strict):
    enabled: bool = False  # the normalizing-flow metric layer on top of the embedding head
    depth: int = Field(4, ge=1, le=32)  # coupling blocks
    hidden: int = Field(128, ge=4, le=4096)  # width of each coupling network
    coupling: Literal["affine", "additive"] = "affine"  # Real-NVP (affine) or NICE (additive) ablation
    dueling: bool = False  # a second flow branch whose log|det J| is maximised (determinant paper, eq. 11)


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only


class SplitConfig(_Strict):
    # The zero-shot DML protocol: train on some classes, evaluate on the unseen rest.
    mode: Literal["first_half", "random_half", "predefined"] = "first_half"
    seed: int = Field(0, ge=0, le=SEED_MAX)  # for random_half, and for the validation split below
    # "predefined" uses the split a benchmark layout ships with (CUB, Cars, SOP)
    # True: train on ⌈T/2⌉ of this split's T training classes (drawn with `seed`) and evaluate on the other ⌊T/2⌋,
    # never on the test classes: the class-disjoint validation split that hyper-parameters are chosen on.
    validation: bool = False


class RunConfig(_Strict):
    backbone: str = Field("small_cnn", max_length=NAME_MAX)  # small_cnn | resnet18/34/50/101 | efficientnet_b0 | vit_b_16 | googlenet
    pretrained: Literal["imagenet"] | None = None  # torchvision's ImageNet weights, via the torch cache (downloaded if online)
    weights_id: str | None = Field(None, pattern=r"^[0-9a-f]{12}$")  # an uploaded weights file (GET /api/weights)
    pretrained_weights: str | None = Field(None, min_length=1, max_length=4096)  # a local state_dict file (never downloaded); CLI only, not the API
    freeze_bn: bool = Field(False, title="Freeze BatchNorm")  # BatchNorm layers of the backbone keep their (pretrained) statistics and affine weights
    image_size: int | None = Field(None, ge=8, le=1024)  # None: follow the dataset
    embedding_dim: int = Field(64, ge=2, le=4096)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    distance: DistanceConfig = Field(default_factory=DistanceConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    miner: MinerConfig = Field(default_factory=MinerConfig)
    regularizers: list[RegularizerConfig] = Field(default_factory=list, max_length=16)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    epochs: int = Field(6, ge=1, le=10_000)
    steps_per_epoch: int | None = Field(None, ge=1, le=1_000_000)  # None: one pass over the train images
    classes_per_batch: int = Field(5, ge=2, le=4096)  # P in the P×K batch
    samples_per_class: int = Field(16, ge=2, le=1024)  # K; density needs K ≥ 2 (4+ recommended)
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision, used only on CUDA

    @field_validator("regularizers")
    @classmethod
    def _unique_regularizers(cls, regs: list[RegularizerConfig]) -> list[RegularizerConfig]:
        names = [r.name for r in regs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"regularizer {dup[0]!r} is listed twice; give each regularizer once with one weight")
        return regs

    @model_validator(mode="after")
    def _one_weights_source(self) -> "RunConfig":
        if self.pretrained and (self.weights_id or self.pretrained_weights):
            raise ValueError("pretrained: 'imagenet' and a weights file (weights_id / pretrained_weights) exclude "
                             "each other; choose one")
        return self

    @model_validator(mode="after")
    def _check_components(self) -> "RunConfig":
        from models.compat import check_config  # late import: the registries import torch

        check_config(self)
        return self

    def skeleton(self) -> "RunConfig":
        """The same architecture with no weights source: for a model whose every weight comes from a checkpoint
        (never open a file, nor download, because a checkpoint's config names one)."""
        return self.model_copy(update={"pretrained_weights": None, "pretrained": None, "weights_id": None})

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def regularizer_weight(self, name: str) -> float:
        return next((r.weight for r in self.regularizers if r.name == name), 0.0)

    def with_patch(self, patch: dict[str, Any]) -> "RunConfig":
        """A new config with `patch` deep-merged in: the "toggle and retrain" action."""
        return RunConfig.model_validate(_deep_merge(self.model_dump(), patch))


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
