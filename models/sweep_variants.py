"""The sweep's variants (the baseline and one per paper idea, each a patch on the base RunConfig, with the small
grid its hyper-parameters are chosen from) and the run a sweep hands out.

Lists are replaced, not merged, by `RunConfig.with_patch`: a grid point that touches the regularizers repeats the
variant's whole list. The margin grid sets the triplet loss's margin and the semi-hard miner's window together
(a triplet inside the miner's window but beyond the loss margin costs nothing), so it assumes the default
triplet + semi-hard base; another base is swept with selection off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.config import RunConfig


@dataclass(frozen=True)
class Variant:
    patch: dict[str, Any]  # deep-merged into the base RunConfig (RunConfig.with_patch)
    grid: tuple[dict[str, Any], ...]  # candidate patches tuned on the validation split (): nothing to tune
    control: str | None  # the variant it is read against besides the baseline
    extra: bool  # not in the default set
    description: str


@dataclass(frozen=True)
class PlannedRun:
    key: str  # unique and stable within the sweep: "select/det/split0/grid1", "final/det/split0/seed2"
    phase: str  # "select" | "final"
    variant: str
    split: int
    seed: int  # the run's RunConfig seed
    grid_index: int | None  # the grid point this run uses (None: the variant's own patch)
    config: RunConfig
    name: str  # human run name, e.g. "sweep det split 0 seed 2"


_ZERO_MEAN = {"name": "zero_mean", "weight": 0.005}  # DSML's λ (SPEC: Revisiting-DML default)


def _margins(*values: float) -> tuple[dict[str, Any], ...]:
    return tuple({"loss": {"params": {"margin": m}}, "miner": {"params": {"margin": m}}} for m in values)


# Margin ÷ mean inter-centroid distance of trained mnist5k runs is ~0.08 under Euclidean, SNR and relative
# Mahalanobis (relative squared errors: unrelated vectors sit near 2) but ~0.03 under squared Euclidean, so the
# squared distance gets a larger grid.
_MARGINS = _margins(0.1, 0.2)
_SQUARED_MARGINS = _margins(0.2, 0.5)
# Batch-level relative density ρ̃ of trained classes sits at ~4–6 (unseen classes near 1): τ = 2 penalised every
# class always and cost Recall@1 at λ 0.5; λ ≈ 0.05 puts the term on the triplet loss's scale.
_DENSITY = tuple({"regularizers": [{"name": "density", "weight": w, "params": {"tau": t}}]}
                 for w, t in ((0.05, 3.0), (0.05, 5.0), (0.1, 5.0)))
# The paper's λ 0.05 (SPEC §3.2 [S]) collapses the gauge-free construction on mnist5k (so do 0.003 and 0.01);
# 0.001 is the top of the range that trains (docs/determinant.md).
_DET_WEIGHTS = (0.0003, 0.001)


def _det(dueling: bool) -> Variant:
    flow = {"enabled": True, "dueling": True} if dueling else {"enabled": True}
    return Variant({"flow": flow, "regularizers": [{"name": "det", "weight": 0.001}]},
                   tuple({"regularizers": [{"name": "det", "weight": w}]} for w in _DET_WEIGHTS), "flow", dueling,
                   "flow layer + determinant regularizer" + (" with the dueling branch (eq. 11)" if dueling else ""))


def _zero_mean_distance(name: str, params: dict[str, Any], control: str | None, extra: bool,
                        description: str) -> Variant:
    distance: dict[str, Any] = {"name": name, **({"params": params} if params else {})}
    margins = _SQUARED_MARGINS if name == "squared_euclidean" else _MARGINS
    return Variant({"distance": distance, "regularizers": [_ZERO_MEAN]}, margins, control, extra,
                   description + " + zero-mean (λ 0.005)")


def _relmaha(metric: str, control: str | None, extra: bool, what: str) -> Variant:
    return _zero_mean_distance("relative_mahalanobis", {"metric": metric}, control, extra,
                               f"relative Mahalanobis, M = {what}")


VARIANTS: dict[str, Variant] = {
    "baseline": Variant({}, _MARGINS, None, False, "the base config (triplet + semi-hard, Euclidean)"),
    "flow": Variant({"flow": {"enabled": True}}, (), None, False,
                    "flow layer alone, no regularizer: det's control (det changes architecture and loss at once)"),
    "det": _det(dueling=False),
    "density": Variant({"regularizers": [{"name": "density", "weight": 0.05, "params": {"tau": 5.0}}]},
                       _DENSITY, None, False,
                       "density-adaptivity regularizer (Li et al.)"),
    "sq_euclidean+zero_mean": _zero_mean_distance("squared_euclidean", {}, None, False,
                                                  "squared Euclidean: SNR's control (its absolute squared error)"),
    "snr+zero_mean": _zero_mean_distance("snr", {}, "sq_euclidean+zero_mean", False, "SNR distance (DSML)"),
    "relmaha_identity+zero_mean": _relmaha("identity", None, False, "I (the control: relative squared Euclidean)"),
    "relmaha_cov+zero_mean": _relmaha("inverse_covariance", "relmaha_identity+zero_mean", False,
                                      "(Σ + εI)⁻¹ of the training embeddings"),
    "det_dueling": _det(dueling=True),
    "relmaha_learned+zero_mean": _relmaha("learned", "relmaha_identity+zero_mean", True,
                                          "LᵀL learned (after a linear head: a re-parametrisation of M = I)"),
}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(name for name, v in VARIANTS.items() if not v.extra)
