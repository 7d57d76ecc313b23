"""Distances between embeddings, as pytorch-metric-learning `BaseDistance`s so every PML loss and miner takes them.

Each distance here is one of four measures applied to a *view* of the vectors:

    kind  value for query a, reference b             views used by
    l2    ‖v(a) − v(b)‖                              euclidean (v = id), mahalanobis (v = L·x)
    sql2  ‖v(a) − v(b)‖²                             squared_euclidean
    rel   ‖v(a) − v(b)‖² / ‖v(a)‖²                   snr (v = x − mean(x)), relative_mahalanobis (v = F·x,
                                                     F = C⁻¹ of Σ + εI = CCᵀ, I, or a learned L)
    ip    ⟨v(a), v(b)⟩  (a similarity)               cosine (v = x / ‖x‖)

so ranking references for a query by this distance is ranking them by L2 (or inner product) on the view: that is
`retrieval_view`, what faiss indexes (SPEC §6). `rel` divides by the *query's* energy: it is asymmetric and the
query/anchor is always the first argument, as in PML (`compute_mat(query, ref)`, rows are queries).

Normalisation is explicit: `normalize=True` L2-normalises embeddings before measuring, `False` (our default)
never does, unlike PML whose distances normalise unless told not to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import BaseDistance
from torch import Tensor, nn

from models.registry import InvalidParameterError, Registry

# A query with no energy in its view (a constant vector under SNR, L·a = 0) has no "signal": its relative
# distances are clamped to ‖·‖²/1e-12 rather than becoming inf/NaN and poisoning a training step.
_MIN_ENERGY = 1e-12


# Pairs closer than this share of ‖a‖² + ‖b‖² are recomputed directly: there the matrix-product form's rounding
# (~1e-7 of ‖a‖² + ‖b‖² in float32) would be ≥ 1e-4 of the value, and identical vectors would not get exactly 0.
_RECOMPUTE_BELOW = 1e-3


def _sq_l2_mat(a: Tensor, b: Tensor) -> Tensor:
    """(Q, R) ‖a_i − b_j‖² as ‖a‖² + ‖b‖² − 2ab (one BLAS product, like PML's LpDistance), clamped at 0.

    The few close pairs (the diagonal of a batch against itself, duplicate images) are recomputed from a − b, so
    identical vectors get exactly 0 and a gradient of exactly 0.
    """
    scale = a.pow(2).sum(dim=1)[:, None] + b.pow(2).sum(dim=1)[None, :]
    squared = torch.addmm(scale, a, b.T, alpha=-2).clamp_min(0)
    i, j = torch.nonzero(squared <= _RECOMPUTE_BELOW * scale, as_tuple=True)
    return squared.index_put((i, j), (a[i] - b[j]).pow(2).sum(dim=1))


def _l2_mat(a: Tensor, b: Tensor) -> Tensor:
    squared = _sq_l2_mat(a, b)
    positive = squared > 0  # sqrt's gradient at 0 is inf (NaN after the clamp): take 0 there instead
    return torch.where(positive, torch.where(positive, squared, 1).sqrt(), 0)


def _energy(v: Tensor) -> Tensor:
    return v.pow(2).sum(dim=1).clamp_min(_MIN_ENERGY)


class ViewDistance(BaseDistance):
    """A distance = one measure (`kind`) on a view of the vectors; subclasses choose both."""

    kind = "l2"  # "l2" | "sql2" | "rel" | "ip"

    def __init__(self, normalize: bool):
        super().__init__(normalize_embeddings=normalize, is_inverted=self.kind == "ip")

    @property
    def asymmetric(self) -> bool:
        """True when d(a, b) ≠ d(b, a): the query/anchor must be the first argument."""
        return self.kind == "rel"

    def view(self, x: Tensor) -> Tensor:
        """The vectors the measure is taken on (after the optional normalisation)."""
        return x

    def measured(self, x: Tensor, frozen: bool = False) -> Tensor:
        """The view of x after the optional normalisation, in the graph: every distance here is a function of the
        Euclidean lengths between these vectors (divided by the query's own energy for `rel`).

        `frozen=True` keeps the distance's own parameters (a learned L) out of the graph, so a term computed on
        the result trains the embeddings only. Views without parameters are unaffected.
        """
        if frozen and any(True for _ in self.parameters()):
            raise NotImplementedError(f"{type(self).__name__} has parameters: override measured(frozen=True)")
        return self.view(self.maybe_normalize(x))

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        """(Q, R) matrix; PML's hook, so inputs are already normalised — call `distance(q, r)` from outside."""
        q, r = self.view(query_emb), self.view(ref_emb)
        if self.kind == "ip":
            return q @ r.T
        if self.kind == "l2":
            return _l2_mat(q, r)
        squared = _sq_l2_mat(q, r)
        return squared / _energy(q).unsqueeze(1) if self.kind == "rel" else squared

    def pairwise_distance(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        """(N,) distances between row i of query and row i of ref.

        Unlike `compute_mat` this normalises when asked (idempotent), so it is safe on raw embeddings, e.g.
        to recompute the exact values of faiss neighbours.
        """
        q, r = self.measured(query_emb), self.measured(ref_emb)
        if self.kind == "ip":
            return (q * r).sum(dim=1)
        if self.kind == "l2":
            return torch.linalg.vector_norm(q - r, dim=1)
        squared = (q - r).pow(2).sum(dim=1)
        return squared / _energy(q) if self.kind == "rel" else squared

    @torch.no_grad()
    def retrieval_view(self, x: Tensor) -> tuple[Tensor, str]:
        """(vectors, "l2" | "ip") such that faiss ranks references for each query exactly as this distance does.

        For `rel` distances the per-query denominator is constant, so the ranking is L2 on the view; the
        values themselves come from `pairwise_distance`. Detached: it is meant for building an index.
        """
        return self.measured(x), "ip" if self.kind == "ip" else "l2"


class Euclidean(ViewDistance):
    kind = "l2"


class SquaredEuclidean(ViewDistance):
    kind = "sql2"


class Cosine(ViewDistance):
    """Cosine similarity (larger = closer, `is_inverted`). Scale-free, so the `normalize` flag changes nothing."""

    kind = "ip"

    def view(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1)


class SNR(ViewDistance):
    """d_S(a, b) = Var(b − a) / Var(a), variances over each vector's own components (Yuan et al. 2019).

    Var(b − a)/Var(a) = ‖b̃ − ã‖²/‖ã‖² with x̃ = x − mean(x): the (M − 1) factors cancel, so this equals PML's
    `SNRDistance` while needing O(Q·R) memory instead of O(Q·R·M).
    """

    kind = "rel"

    def view(self, x: Tensor) -> Tensor:
        return x - x.mean(dim=1, keepdim=True)


class _Quadratic(ViewDistance):
    """A measure on the view x ↦ F·x, i.e. under the quadratic form M = FᵀF; subclasses say what F is."""

    def __init__(self, normalize: bool, dim: int):
        super().__init__(normalize)
        self.dim = dim

    def factor(self) -> Tensor | None:
        """F (dim × dim), or None for F = I."""
        raise NotImplementedError

    def view(self, x: Tensor) -> Tensor:
        return self._project(x, self.factor())

    def measured(self, x: Tensor, frozen: bool = False) -> Tensor:
        factor = self.factor()
        return self._project(self.maybe_normalize(x), factor.detach() if frozen and factor is not None else factor)

    def _project(self, x: Tensor, factor: Tensor | None) -> Tensor:
        if x.shape[1] != self.dim:
            raise ValueError(f"this {type(self).__name__} distance was built for {self.dim}-d embeddings "
                             f"but got {x.shape[1]}-d ones; create it with dim={x.shape[1]}")
        return x if factor is None else x @ factor.T

    def metric_matrix(self) -> Tensor:
        """M = FᵀF, the matrix of the quadratic form."""
        factor = self.factor()
        return torch.eye(self.dim) if factor is None else factor.T @ factor


class Mahalanobis(_Quadratic):
    """d_M(a, b) = √((a − b)ᵀ M (a − b)) with a learnable M = LᵀL ⪰ 0; L (dim × dim) starts as the identity."""

    kind = "l2"

    def __init__(self, normalize: bool, dim: int):
        super().__init__(normalize, dim)
        self.L = nn.Parameter(torch.eye(dim))

    def factor(self) -> Tensor:
        return self.L


RELATIVE_METRICS = ("inverse_covariance", "identity", "learned")


class RelativeMahalanobis(_Quadratic):
    """d_RM(a, b) = (a − b)ᵀM(a − b) / (aᵀMa): SNR's relative error on a Mahalanobis base (SPEC §1.4).

    Asymmetric: the query/anchor a (first argument) supplies the denominator. `metric` chooses M:
    - "inverse_covariance" (the seed's proposal): M = (Σ + εI)⁻¹, Σ the covariance of training embeddings,
      ε = shrinkage · tr(Σ)/D. `refresh(embeddings)` re-estimates it (the trainer calls it at the start of every
      epoch); it is held as the buffer `whitener` W = C⁻¹ with Σ + εI = CCᵀ (Cholesky), so M = WᵀW, the view is
      W·x and checkpoints, evaluation, retrieval and the server all use the same M. Not trained by gradients.
      Before the first refresh W = I. d_RM is invariant to M's scale, and ε follows Σ's scale, so M's effect
      does not depend on the embedding's overall scale.
    - "identity": M = I, the control: the relative squared Euclidean error ‖a − b‖²/‖a‖², i.e. SNR under its
      zero-mean assumption.
    - "learned": M = LᵀL with L learned from the identity. After a linear head this is only a
      re-parametrisation of relative squared Euclidean (L·(Wf + b) is another linear head): a control for
      the optimiser, not a new metric.
    """

    kind = "rel"

    def __init__(self, normalize: bool, dim: int, metric: str = "inverse_covariance", shrinkage: float = 0.1):
        super().__init__(normalize, dim)
        if metric not in RELATIVE_METRICS:
            raise InvalidParameterError(f"relative_mahalanobis metric must be one of {', '.join(RELATIVE_METRICS)}; "
                                        f"got {metric!r}")
        if not shrinkage > 0 or shrinkage == float("inf"):
            raise InvalidParameterError(f"relative_mahalanobis shrinkage must be a finite number > 0, got {shrinkage}")
        self.shrinkage = shrinkage
        self._use(metric)
        self.register_load_state_dict_pre_hook(_adopt_a_learned_L)

    def _use(self, metric: str) -> None:
        for name in ("L", "whitener"):
            if hasattr(self, name):
                delattr(self, name)
        if metric == "learned":
            self.L = nn.Parameter(torch.eye(self.dim))
        elif metric == "inverse_covariance":
            self.register_buffer("whitener", torch.eye(self.dim))
        self.metric = metric

    def factor(self) -> Tensor | None:
        if self.metric == "learned":
            return self.L
        return self.whitener if self.metric == "inverse_covariance" else None

    @torch.no_grad()
    def refresh(self, embeddings: Tensor) -> None:
        """M = (Σ + εI)⁻¹ from these (training) embeddings, as measured (normalised first when `normalize`);
        a no-op for the identity and learned forms. Computed in float64."""
        if self.metric != "inverse_covariance":
            return
        x = self.maybe_normalize(embeddings).double()
        if x.ndim != 2 or x.shape[1] != self.dim or len(x) < 2:
            raise ValueError(f"refresh needs ≥ 2 embeddings of width {self.dim}, got shape {tuple(x.shape)}")
        cov = torch.atleast_2d(torch.cov(x.T))
        ridge = self.shrinkage * torch.trace(cov) / self.dim
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        if not ridge > 0:  # every embedding equal: no direction to prefer, and M's scale does not matter
            whitener = eye
        else:
            whitener = torch.linalg.solve_triangular(torch.linalg.cholesky(cov + ridge * eye), eye, upper=False)
        self.whitener.copy_(whitener.to(self.whitener))


def _adopt_a_learned_L(module: RelativeMahalanobis, state: dict, prefix: str, *_) -> None:
    """Checkpoints from before `metric` existed hold the learned L under a config without `metric`: only the
    learned form has an L, so a state with one is that form, whatever the (defaulted) config says."""
    if prefix + "L" in state and module.metric != "learned":
        module._use("learned")


DISTANCES: Registry[ViewDistance] = Registry("distance", injected=("normalize", "dim"))


@DISTANCES.register("euclidean", tags=("symmetric",))
def euclidean(normalize: bool, dim: int | None) -> ViewDistance:
    """Euclidean distance ‖a − b‖."""
    return Euclidean(normalize)


@DISTANCES.register("squared_euclidean", tags=("symmetric",))
def squared_euclidean(normalize: bool, dim: int | None) -> ViewDistance:
    """Squared Euclidean distance ‖a − b‖² (the d² of the classic triplet loss)."""
    return SquaredEuclidean(normalize)


@DISTANCES.register("cosine", tags=("symmetric", "similarity"))
def cosine(normalize: bool, dim: int | None) -> ViewDistance:
    """Cosine similarity ⟨a, b⟩ / (‖a‖‖b‖); larger means closer."""
    return Cosine(normalize)


@DISTANCES.register("snr", tags=("asymmetric",))
def snr(normalize: bool, dim: int | None) -> ViewDistance:
    """Signal-to-noise ratio distance Var(b − a) / Var(a); asymmetric, the query is the signal."""
    return SNR(normalize)


def _need_dim(name: str, dim: int | None) -> int:
    if dim is None or dim < 1:
        raise ValueError(f"distance '{name}' learns a dim × dim matrix; pass dim = the embedding dimension")
    return dim


@DISTANCES.register("mahalanobis", tags=("symmetric", "learnable"))
def mahalanobis(normalize: bool, dim: int | None) -> ViewDistance:
    """Mahalanobis distance √((a − b)ᵀLᵀL(a − b)) with L learned, starting at the identity."""
    return Mahalanobis(normalize, _need_dim("mahalanobis", dim))


@DISTANCES.register("relative_mahalanobis", tags=("asymmetric",), help={
    "metric": "M: inverse_covariance = (Σ + εI)⁻¹ of training embeddings, refreshed each epoch (the paper's "
              "proposal) | identity = I (the control: relative squared Euclidean) | learned = LᵀL (after a linear "
              "head only a re-parametrisation of relative squared Euclidean)",
    "shrinkage": "inverse_covariance only: ε = shrinkage · tr(Σ)/D is added to Σ's diagonal"})
def relative_mahalanobis(normalize: bool, dim: int | None, metric: str = "inverse_covariance",
                         shrinkage: float = 0.1) -> ViewDistance:
    """Relative Mahalanobis (a − b)ᵀM(a − b) / aᵀMa, asymmetric (the query is first); M = (Σ + εI)⁻¹ of training
    embeddings by default, or I (control), or a learned LᵀL (a re-parametrisation after a linear head)."""
    return RelativeMahalanobis(normalize, _need_dim("relative_mahalanobis", dim), metric, shrinkage)


def create_distance(name: str, normalize: bool = False, dim: int | None = None, **params) -> ViewDistance:
    """Build a registered distance; `dim` (the embedding width) is needed by the learnable Mahalanobis ones."""
    return DISTANCES.create(name, normalize, dim, **params)


def list_distances() -> list[str]:
    return DISTANCES.names()
