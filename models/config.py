"""RunConfig: the one typed description of a run, read by the CLI, the HTTP API and the trainer alike.

Plain frozen data: importing this module and validating a config needs neither torch nor a registry, so the CLI's
`--help`, the HTTP schema and a config check stay fast. A config holds its own invariants (ranges, finite
numbers, name shapes, and cross-field rules that need no registry) at construction, at every level, and cannot be
changed afterwards: derive a new one with `with_patch` or `model_copy(update=...)` plus `model_validate`.
Whether the component names and parameters exist is a separate, explicit step, `models.compat.check_config`,
taken where a config enters the system (HTTP request, CLI flags, checkpoint import, training).

Every field's `description` is the single source of its help text: the CLI flags, the OpenAPI schema and the
browser's form all read it.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    # Unknown fields are errors: a typo in a config must not silently train the default. NaN and ±inf are
    # refused as "not a finite number" before any range check could call them "greater than" a bound.
    # Frozen: an assignment would skip the invariants the parent model checks, so there is none.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


NAME_MAX = 64  # component names are registry keys; a longer one can only be a mistake (or a huge echo)
SEED_MAX = 2**31 - 1
PARAMS_MAX = 32  # parameters of one component; every registered component takes far fewer
REGULARIZERS_MAX = 16
ParamName = Annotated[str, Field(max_length=NAME_MAX)]
Params = Annotated[dict[ParamName, Any], Field(max_length=PARAMS_MAX)]
_PARAMS_HELP = "the component's parameters by name; GET /api/components lists each one's type, default and meaning"


class DistanceConfig(_Frozen):
    """How two embeddings are compared, in training and in every evaluation."""
    name: str = Field("euclidean", max_length=NAME_MAX,
                      description="euclidean, squared_euclidean, cosine, snr, mahalanobis or relative_mahalanobis")
    normalize: bool = Field(False, description="L2-normalise embeddings before measuring (explicit, never implied)")
    params: Params = Field(default_factory=dict, description=_PARAMS_HELP)


class LossConfig(_Frozen):
    """The metric-learning loss."""
    name: str = Field("triplet", max_length=NAME_MAX,
                      description="triplet, contrastive, multi_similarity, proxy_anchor, proxy_nca, ... "
                                  "(proxy losses take no miner)")
    params: Params = Field(default_factory=dict, description=_PARAMS_HELP + ', e.g. {"margin": 0.2}')


class MinerConfig(_Frozen):
    """Which pairs or triplets of a batch the loss sees."""
    name: str = Field("semihard", max_length=NAME_MAX,
                      description="none, all, semihard, batch_hard or multi_similarity")
    params: Params = Field(default_factory=dict, description=_PARAMS_HELP)


class RegularizerConfig(_Frozen):
    """One term added to the loss: weight × value."""
    name: str = Field(max_length=NAME_MAX, description="det, density, zero_mean, l2_embedding or l2_weights")
    weight: float = Field(0.1, ge=0.0, le=1e3, description="λ: the term added to the loss is weight × value")
    params: Params = Field(default_factory=dict, description=_PARAMS_HELP)


class FlowConfig(_Frozen):
    """The normalizing-flow metric layer on top of the embedding head."""
    enabled: bool = Field(False, description="normalizing-flow metric layer after the embedding head: gives "
                                             "log|det J| per image")
    depth: int = Field(4, ge=1, le=32, description="coupling blocks in the flow")
    hidden: int = Field(128, ge=4, le=4096, description="width of each coupling network")
    coupling: Literal["affine", "additive"] = Field(
        "affine", description="affine = Real-NVP, additive = NICE (volume-preserving ablation)")
    dueling: bool = Field(False, description="a second flow branch whose log|det J| is maximised (determinant "
                                             "paper, eq. 11; approximation); needs the det regularizer")

    @model_validator(mode="after")
    def _dueling_needs_a_flow(self) -> "FlowConfig":
        if self.dueling and not self.enabled:
            raise ValueError("flow.dueling: the dueling branch is a second flow layer; set flow.enabled = true too")
        return self


class OptimizerConfig(_Frozen):
    """The optimizer, over three parameter groups: backbone, head (embedding layer + flow), loss (proxies)."""
    # models/optim.py: Proxy-Anchor trains the backbone and the embedding layer at 1e-4 and the proxies 100×
    # faster; a fine-tuned pretrained backbone wants a smaller rate than freshly initialised parts.
    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="adam, adamw or sgd")
    lr: float = Field(1e-3, gt=0.0, le=10.0, title="Learning rate",
                      description="learning rate of the backbone, and of every group whose own rate is unset")
    head_lr: float | None = Field(None, gt=0.0, le=10.0, title="Head learning rate",
                                  description="learning rate of the embedding layer and the flow; unset: lr")
    loss_lr: float | None = Field(None, gt=0.0, le=10.0, title="Loss learning rate",
                                  description="learning rate of the loss's parameters (proxies) and the "
                                              "distance's (Mahalanobis L); unset: head_lr")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay (decoupled for adamw) of the "
                                                                 "backbone, and of the other groups when "
                                                                 "head_weight_decay is unset")
    head_weight_decay: float | None = Field(None, ge=0.0, le=1.0,
                                            description="weight decay of the head and the loss's parameters; "
                                                        "unset: weight_decay")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="momentum; sgd only")


class AugmentConfig(_Frozen):
    """Data augmentation and loading: none, or the standard DML benchmark recipe (models/augment.py)."""
    # standard: training images are random resized crops of the stored image at image_size (224) with a flip;
    # evaluation and queries resize the short side to `resize` (256) and take the centre image_size crop. none:
    # every image resized and centre-cropped to image_size, right for small, centred sets such as mnist5k.
    mode: Literal["none", "standard"] = Field(
        "none", description="none: every image resized and centre-cropped to image_size; standard: random resized "
                            "crop + flip for training, resize + centre crop for evaluation and queries")
    resize: int | None = Field(None, ge=8, le=2048, description="standard: the short side before the evaluation "
                                                                "centre crop; unset: image_size × 8/7 (256 for 224)")
    scale_min: float = Field(0.08, gt=0.0, le=1.0, description="standard: the smallest training crop's area, as a "
                                                               "fraction of the image (the largest is all of it)")
    flip: bool = Field(True, description="standard: flip training crops horizontally with probability 1/2")
    workers: int | None = Field(None, ge=0, le=64, description="data-loading worker processes; unset: 0 for mode "
                                                               "none, else one per spare CPU core (at most 8)")


class SplitConfig(_Frozen):
    """The zero-shot DML protocol: train on some classes, evaluate on the unseen rest."""
    mode: Literal["first_half", "random_half", "predefined"] = Field(
        "first_half", description="zero-shot protocol: train on some classes, test on the unseen rest; predefined: "
                                  "the split a benchmark layout ships with (CUB, Cars, SOP)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="draws the classes for random_half and for validation")
    validation: bool = Field(False, description="train on ⌈T/2⌉ of the T training classes and evaluate on the "
                                                "other ⌊T/2⌋, never on the test classes: the class-disjoint split "
                                                "hyper-parameters are chosen on")


class RunConfig(_Frozen):
    """Everything a run is a pure function of, besides its image set."""
    backbone: str = Field("small_cnn", max_length=NAME_MAX,
                          description="small_cnn, resnet18/34/50/101, efficientnet_b0, vit_b_16 or googlenet")
    pretrained: Literal["imagenet"] | None = Field(
        None, description="torchvision's ImageNet weights, fetched once into the torch cache (offline: upload a "
                          "weights file instead)")
    weights_id: str | None = Field(None, pattern=r"^[0-9a-f]{12}$",
                                   description="an uploaded backbone weights file (GET /api/weights)")
    pretrained_weights: str | None = Field(None, min_length=1, max_length=4096,
                                           description="a local state_dict file for the backbone (never "
                                                       "downloaded); command line only, not the HTTP API")
    freeze_bn: bool = Field(False, title="Freeze BatchNorm",
                            description="keep the backbone's BatchNorm statistics and affine weights as loaded "
                                        "(Proxy-Anchor's recipe)")
    image_size: int | None = Field(None, ge=8, le=1024, description="input side in pixels; unset: the data "
                                                                    "set's own size")
    embedding_dim: int = Field(64, ge=2, le=4096, description="width of the embedding")
    flow: FlowConfig = Field(default_factory=FlowConfig, description=FlowConfig.__doc__)
    distance: DistanceConfig = Field(default_factory=DistanceConfig, description=DistanceConfig.__doc__)
    loss: LossConfig = Field(default_factory=LossConfig, description=LossConfig.__doc__)
    miner: MinerConfig = Field(default_factory=MinerConfig, description=MinerConfig.__doc__)
    regularizers: tuple[RegularizerConfig, ...] = Field((), max_length=REGULARIZERS_MAX,
                                                        description="terms added to the loss, each name once")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description=OptimizerConfig.__doc__)
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description=AugmentConfig.__doc__)
    epochs: int = Field(6, ge=1, le=10_000, description="passes of steps_per_epoch optimizer steps")
    steps_per_epoch: int | None = Field(None, ge=1, le=1_000_000,
                                        description="optimizer steps per epoch; unset: one pass over the training "
                                                    "images")
    classes_per_batch: int = Field(5, ge=2, le=4096, description="P in the P×K batch")
    samples_per_class: int = Field(16, ge=2, le=1024, description="K in the P×K batch; density needs K ≥ 2 (4+ "
                                                                  "recommended)")
    split: SplitConfig = Field(default_factory=SplitConfig, description=SplitConfig.__doc__)
    seed: int = Field(0, ge=0, le=SEED_MAX, description="the run's random seed: initial weights and batch order")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")
    amp: bool = Field(True, description="mixed precision, CUDA only")

    @field_validator("regularizers", mode="before")
    @classmethod
    def _few_regularizers(cls, regs: Any) -> Any:
        # Before pydantic's own length check, which would call the JSON list a "Tuple ... after validation".
        if isinstance(regs, (list, tuple)) and len(regs) > REGULARIZERS_MAX:
            raise ValueError(f"List should have at most {REGULARIZERS_MAX} items, not {len(regs)}")
        return regs

    @field_validator("regularizers")
    @classmethod
    def _unique_regularizers(cls, regs: tuple[RegularizerConfig, ...]) -> tuple[RegularizerConfig, ...]:
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
    def _resize_covers_crop(self) -> "RunConfig":
        a = self.augment
        if a.resize is not None and self.image_size is not None and a.resize < self.image_size:
            raise ValueError(f"augment.resize ({a.resize}) is smaller than image_size ({self.image_size}): the "
                             "evaluation centre crop must fit inside the resized image")
        return self

    @model_validator(mode="after")
    def _dueling_pairs_with_det(self) -> "RunConfig":
        # The dueling branch and the det regularizer's dueling term exist only together.
        det = next((r for r in self.regularizers if r.name == "det"), None)
        if self.flow.dueling and det is None:
            raise ValueError("flow.dueling: the dueling branch learns only through the det regularizer's dueling "
                             "term; add {\"name\": \"det\"} to regularizers or set flow.dueling = false")
        if det is not None and "dueling_ratio" in det.params and not self.flow.dueling:
            k = self.regularizers.index(det)
            raise ValueError(f"regularizers[{k}].params.dueling_ratio: only used with flow.dueling = true; "
                             f"enable the dueling branch or drop the parameter")
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
        """A new, validated config with `patch` deep-merged in: the "toggle and retrain" action. Nested objects
        merge key by key; lists and `params` are replaced whole. These semantics exist only here (with their
        inverse, `patch_to`): the browser asks the server (/api/config/diff)."""
        return RunConfig.model_validate(_deep_merge(self.model_dump(), patch))

    def patch_to(self, other: "RunConfig") -> dict[str, Any]:
        """The smallest patch p with `self.with_patch(p) == other`: what changed, in with_patch's terms."""
        return _diff(self.model_dump(mode="json"), other.model_dump(mode="json"))

    def changes(self, patch: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """(dotted field, value here, value in the patch) for every value `patch` replaces, in patch order."""
        return _leaves(self.model_dump(mode="json"), patch, "")


def _merges(key: str, base: Any, value: Any) -> bool:
    """Whether a patch value merges into the base value key by key (objects) or replaces it (lists, `params`)."""
    return isinstance(value, dict) and isinstance(base, dict) and key != "params"


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = _deep_merge(out[key], value) if _merges(key, out.get(key), value) else value
    return out


def _diff(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key, value in other.items():
        if _merges(key, base.get(key), value):
            if sub := _diff(base[key], value):
                patch[key] = sub
        elif base.get(key) != value:
            patch[key] = value
    return patch


def _leaves(base: dict[str, Any], patch: dict[str, Any], prefix: str) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    for key, value in patch.items():
        before = base.get(key)
        out += (_leaves(before, value, f"{prefix}{key}.") if _merges(key, before, value)
                else [(f"{prefix}{key}", before, value)])
    return out
