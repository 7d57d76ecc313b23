"""Regularizers by name: each an nn.Module mapping `RegularizerInputs` to an unweighted scalar.

The trainer adds weight × value for each configured regularizer, so it stays generic; everything a regularizer
might read travels in one `RegularizerInputs`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flow import sphere_log_volume
from models.registry import InvalidParameterError, Registry

_KINK_ULPS = 64  # float32 ulps per log term treated as "on the kink" (margin ~100× over the noise measured)


@dataclass
class RegularizerInputs:
    embeddings: Tensor  # (B, D) the final embedding, what the loss sees
    labels: Tensor  # (B,) int64 class ids
    features: Tensor | None = None  # (B, D) the flow layer's input (unit-norm head outputs); None without flow
    logdet: Tensor | None = None  # (B,) log-volume change of the flow's sphere map (branch 1) at `features`
    logdet_dueling: Tensor | None = None  # (B,) the same for the dueling branch
    flow: nn.Module | None = None  # the branch-1 flow, for logdets at points not in the batch
    model: nn.Module | None = None  # the whole network, for weight penalties
    distance: nn.Module | None = None  # the run's distance


REGULARIZERS: Registry[nn.Module] = Registry("regularizer")


def _zero(x: Tensor) -> Tensor:
    """A 0 that is still connected to the graph, so backward() works whatever the batch held."""
    return x.sum() * 0


def _same_class_partners(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(i, j): each sample of a class with ≥ 2 members paired with the next sample of its class (cyclically)."""
    sorted_labels, order = torch.sort(labels, stable=True)
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    sizes = torch.repeat_interleave(counts, counts)
    position = torch.arange(len(labels), device=labels.device)
    partner = starts + (position - starts + 1) % sizes
    keep = sizes >= 2
    return order[keep], order[partner[keep]]


class DeterminantRegularizer(nn.Module):
    """R = mean_i log vol_i (minimised), vol_i the volume change of the flow's sphere-to-sphere map u ↦ ẑ at u_i
    (`models.flow.sphere_log_volume`); with the dueling branch, minus dueling_ratio × mean_i min(log vol2_i, 0)
    of that branch (paper eq. 11, bounded).

    Input and output of the flow are unit vectors, so no layer before the flow and no global output scale can
    change R (docs/determinant.md): lowering it means contracting the sphere around the samples, which must be
    paid for by expanding it elsewhere (the sphere's total volume is fixed). The dueling branch is maximised
    only up to "nowhere contracting" (log vol2 ≤ 0 counts, > 0 earns nothing), so its term is bounded and
    maximising it cannot diverge.

    With epsilon > 0 it also evaluates log vol at x̃ = normalise(u_i + ε(u_j − u_i)) between same-class pairs
    (the paper regularises "the regions between similar samples"), averaged together with the real points.
    R itself is the paper's linear form, unbounded below: too large a weight contracts the whole sphere into a
    cap (docs/determinant.md gives the weights that stay clear of that).
    """

    def __init__(self, dueling_ratio: float = 1.0, epsilon: float = 0.0):
        super().__init__()
        if dueling_ratio < 0:
            raise InvalidParameterError(f"det dueling_ratio (λ2/λ1) must be ≥ 0, got {dueling_ratio}")
        if not 0.0 <= epsilon <= 1.0:
            raise InvalidParameterError(f"det epsilon is an interpolation fraction in [0, 1], got {epsilon}")
        self.dueling_ratio = dueling_ratio
        self.epsilon = epsilon

    def forward(self, inputs: RegularizerInputs) -> Tensor:
        if inputs.logdet is None:
            raise ValueError("the det regularizer reads the flow layer's log-volume; enable flow (flow.enabled)")
        log_volumes = [inputs.logdet]
        if self.epsilon > 0:
            if inputs.features is None or inputs.flow is None:
                raise ValueError("det with epsilon > 0 needs the flow's input features and the flow module")
            u = inputs.features
            i, j = _same_class_partners(inputs.labels)
            x_tilde = F.normalize(u[i] + self.epsilon * (u[j] - u[i]), dim=1)
            log_volumes.append(sphere_log_volume(inputs.flow, x_tilde, *inputs.flow(x_tilde)))
        value = torch.cat(log_volumes).mean()
        if inputs.logdet_dueling is not None:
            dim = inputs.embeddings.shape[1]
            value = value - self.dueling_ratio * _contraction(inputs.logdet_dueling, dim).mean()
        return value


def _contraction(log_volume: Tensor, dim: int) -> Tensor:
    """min(log vol, 0), its kink's gradient decided outside float noise: a log-volume up to `tol` above 0 still
    counts (gradient 1, value 0). An identity-initialised flow puts every sample exactly on the kink, where
    log vol = log|det J| + log|cos| − D·log‖z‖ (D + 1 logs of values ≈ 1) comes out as ±D ulp of noise (7e-7 at
    D = 8); with a plain clamp that noise's sign chose which samples trained the branch, so any change of
    summation order (two processes' synced BatchNorm, thread counts, devices) moved it by ~1e-3 in one step."""
    tol = _KINK_ULPS * (dim + 1) * torch.finfo(torch.float32).eps
    return torch.where(log_volume <= tol, log_volume - log_volume.detach().clamp(min=0), 0.0)


class DensityRegularizer(nn.Module):
    """Density adaptivity — an approximation (SPEC §2.2 [R]; the paper's exact formula was not available).

    Per class c with ≥ 2 samples in the batch: centroid μ_c (mean embedding), spread s_c = mean_i ℓ(μ_c, f_i),
    nearest gap g_c = min_{c'≠c} ℓ(μ_c, μ_c'), relative density ρ̃_c = g_c / s_c, and
    R = mean_c [sg(g_c) / s_c − τ]_+ : only classes packed more tightly than τ times their distance to the
    nearest other class are penalised.

    ℓ is the length the run's own distance is built on: the Euclidean length between the distance's measured
    vectors (`distance.measured`): ‖a − b‖ for euclidean, √d for squared_euclidean, √((a − b)ᵀM(a − b)) for the
    Mahalanobis forms, the chord √(2 − 2 cos) between unit vectors for cosine, ‖b̃ − ã‖ (centred vectors) for
    SNR; Euclidean when no distance is given. SNR and relative Mahalanobis divide that squared length by the
    anchor's energy; with the class's own centroid as the anchor of both gap and spread it cancels, so
    ρ̃ = √d(μ_c, μ_c') / mean_i √d(μ_c, f_i) exactly under them too. ρ̃ is a ratio of lengths: scale-free, and τ
    means the same under every distance (it would be squared if d itself were used for the quadratic ones).

    Orientation. Minimising the plain ratio also pulls the nearest centroids together (its numerator). Here the
    gap is detached (sg): a scale, not a target, so the descent acts on the spread alone and moves an over-dense
    class's samples apart around its own centroid. The direction each class moves in depends on that class only
    (the other classes only rescale it), so R never pulls classes towards each other; under every distance but
    cosine (whose normalisation is not translation-invariant) a class's gradients sum to zero and its centroid
    stays put to first order. Leaving the anchor's energy out of ℓ matters for the same reason: with it, R could
    also be lowered by moving a centroid towards the origin. The distance's own parameters (a learned L) are
    frozen here, or scaling L up would lower R without changing any ratio.
    """

    def __init__(self, tau: float = 5.0, eps: float = 1e-8):
        super().__init__()
        if tau < 0 or eps <= 0:
            raise InvalidParameterError(f"density needs tau ≥ 0 and eps > 0, got tau={tau}, eps={eps}")
        self.tau = tau
        self.eps = eps

    def forward(self, inputs: RegularizerInputs) -> Tensor:
        x, labels = inputs.embeddings, inputs.labels
        classes, counts = torch.unique(labels, return_counts=True)
        classes = classes[counts >= 2]
        if len(classes) < 2:
            return _zero(x)
        keep = torch.isin(labels, classes)
        x, members = x[keep], torch.searchsorted(classes, labels[keep])
        n = torch.bincount(members, minlength=len(classes)).to(x.dtype)
        centroids = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add(0, members, x)
        centroids = centroids / n.unsqueeze(1)
        measured = (lambda t: t) if inputs.distance is None else lambda t: inputs.distance.measured(t, frozen=True)
        v, v_centroids = measured(x), measured(centroids)
        radii = torch.linalg.vector_norm(v - v_centroids[members], dim=1)
        spread = torch.zeros_like(n).index_add(0, members, radii) / n
        with torch.no_grad():
            gaps = torch.cdist(v_centroids, v_centroids, compute_mode="donot_use_mm_for_euclid_dist")
            nearest = gaps.masked_fill(torch.eye(len(classes), dtype=torch.bool, device=x.device), float("inf"))
            nearest = nearest.min(dim=1).values
        return torch.relu(nearest / (spread + self.eps) - self.tau).mean()


class ZeroMeanRegularizer(nn.Module):
    """DSML's zero-mean term mean_i |Σ_m h_im| (SPEC §1.2), which keeps SNR ≈ relative squared Euclidean.

    Same value as PML's `ZeroMeanRegularizer` with its default mean reduction; written out because ours takes
    `RegularizerInputs`. Revisiting-DML's weight is 0.005.
    """

    def forward(self, inputs: RegularizerInputs) -> Tensor:
        return inputs.embeddings.sum(dim=1).abs().mean()


class EmbeddingL2(nn.Module):
    """mean_i ‖h_i‖²: keeps embeddings from drifting to large norms (an N-pair-loss companion)."""

    def forward(self, inputs: RegularizerInputs) -> Tensor:
        return inputs.embeddings.pow(2).sum(dim=1).mean()


class WeightL2(nn.Module):
    """Σ ‖W‖² over the trainable weight matrices and convolution kernels of the model (parameters with ≥ 2 dims).

    Biases and normalisation scales/shifts (1-d) are left out: a bias only shifts and a norm layer's scale is
    re-standardised by the next norm, so shrinking them does not reduce how much the network stretches space —
    which is the point of comparing this with the det regularizer. Frozen parameters are left out too.
    """

    def forward(self, inputs: RegularizerInputs) -> Tensor:
        if inputs.model is None:
            raise ValueError("the l2_weights regularizer needs inputs.model (the network)")
        weights = [p for p in inputs.model.parameters() if p.requires_grad and p.dim() >= 2]
        if not weights:
            raise ValueError("l2_weights found no trainable weight matrices in the model")
        return torch.stack([w.pow(2).sum() for w in weights]).sum()


@REGULARIZERS.register("det", tags=("needs_flow",), help={
    "dueling_ratio": "λ2/λ1: weight of the dueling branch's contraction, mean min(log vol, 0), subtracted "
                     "(flow.dueling only)",
    "epsilon": "also regularise at normalise(u_i + ε(u_j − u_i)) between same-class samples; 0 turns it off"})
def det(dueling_ratio: float = 1.0, epsilon: float = 0.0) -> nn.Module:
    """Determinant regularisation: mean log-volume change of the flow's sphere-to-sphere map at the samples."""
    return DeterminantRegularizer(dueling_ratio, epsilon)


@REGULARIZERS.register("density", tags=("needs_class_pairs", "approximation"), help={
    "tau": "relative density (nearest centroid gap / spread, a ratio of lengths under the run's distance) above "
           "which a class is penalised; trained mnist5k classes sit at 4–6 in a batch (unseen ones near 1), and the "
           "sweeps' validation split chose 5 every time (τ = 2 penalised every class and cost Recall@1)",
    "eps": "added to the spread to avoid dividing by 0"})
def density(tau: float = 5.0, eps: float = 1e-8) -> nn.Module:
    """Density adaptivity (approximation): loosen classes denser than tau relative to their nearest neighbour,
    measured under the run's own distance; never pulls classes together."""
    return DensityRegularizer(tau, eps)


@REGULARIZERS.register("zero_mean")
def zero_mean() -> nn.Module:
    """SNR zero-mean: mean |Σ_m h_m| over the batch, so SNR behaves as a relative squared Euclidean error."""
    return ZeroMeanRegularizer()


@REGULARIZERS.register("l2_embedding")
def l2_embedding() -> nn.Module:
    """Mean squared L2 norm of the embeddings."""
    return EmbeddingL2()


@REGULARIZERS.register("l2_weights")
def l2_weights() -> nn.Module:
    """Sum of squared weights of the network (matrices and kernels; no biases or norm layers)."""
    return WeightL2()


def create_regularizer(name: str, **params) -> nn.Module:
    return REGULARIZERS.create(name, **params)


def list_regularizers() -> list[str]:
    return REGULARIZERS.names()
