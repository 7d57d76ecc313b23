"""Distances between embeddings, as pytorch-metric-learning `BaseDistance`s so every PML loss and miner takes them.

Each distance here is one of four measures applied to a *view* of the vectors:

    kind  value for query a, reference b             views used by
    l2    ‖v(a) − v(b)‖                              euclidean (v = id), mahalanobis (v = L·x)
    sql2  ‖v(a) − v(b)‖²                             squared_euclidean
    rel   ‖v(a) − v(b)‖² / ‖v(a)‖²                   snr (v = x − mean(x)), relative_mahalanobis (v = L·x)
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

from models.registry import Registry

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
        q, r = self.view(self.maybe_normalize(query_emb)), self.view(self.maybe_normalize(ref_emb))
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
        return self.view(self.maybe_normalize(x)), "ip" if self.kind == "ip" else "l2"


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


class Mahalanobis(ViewDistance):
    """d_M(a, b) = √((a − b)ᵀ M (a − b)) with a learnable M = LᵀL ⪰ 0; L (dim × dim) starts as the identity."""

    kind = "l2"

    def __init__(self, normalize: bool, dim: int):
        super().__init__(normalize)
        self.L = nn.Parameter(torch.eye(dim))

    def view(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.L.shape[1]:
            raise ValueError(f"this {type(self).__name__} distance was built for {self.L.shape[1]}-d embeddings "
                             f"but got {x.shape[1]}-d ones; create it with dim={x.shape[1]}")
        return x @ self.L.T

    def metric_matrix(self) -> Tensor:
        """M = LᵀL, the matrix of the quadratic form."""
        return self.L.T @ self.L


class RelativeMahalanobis(Mahalanobis):
    """d_RM(a, b) = (a − b)ᵀM(a − b) / (aᵀMa), M = LᵀL learnable: SNR's relative error on a Mahalanobis base.

    Asymmetric (the query's own Mahalanobis energy is the denominator); with M = I it is the zero-mean SNR.
    """

    kind = "rel"


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


@DISTANCES.register("relative_mahalanobis", tags=("asymmetric", "learnable"))
def relative_mahalanobis(normalize: bool, dim: int | None) -> ViewDistance:
    """Relative Mahalanobis (a − b)ᵀM(a − b) / aᵀMa, M = LᵀL learned; asymmetric, the query is first."""
    return RelativeMahalanobis(normalize, _need_dim("relative_mahalanobis", dim))


def create_distance(name: str, normalize: bool = False, dim: int | None = None, **params) -> ViewDistance:
    """Build a registered distance; `dim` (the embedding width) is needed by the learnable Mahalanobis ones."""
    return DISTANCES.create(name, normalize, dim, **params)


def list_distances() -> list[str]:
    return DISTANCES.names()
