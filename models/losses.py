"""Losses and miners by name, each built on pytorch-metric-learning with the run's own distance.

PML writes every loss once in terms of `distance.margin(x, y)` and `is_inverted`, so each works with each of our
distances (SNR turns them into the DSML losses of SPEC §1.2). `DMLCriterion` adds the miner and cheap diagnostics
that tell "loss 0 because every term is satisfied" from "loss 0 because nothing was mined" or collapse.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import BaseDistance
from torch import Tensor, nn

from models.config import LossConfig, MinerConfig
from models.registry import InvalidParameterError, Registry

LOSSES: Registry[nn.Module] = Registry("loss", injected=("distance", "num_classes", "embedding_dim"))
MINERS: Registry[nn.Module | None] = Registry("miner", injected=("distance",))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidParameterError(message)


def _targets(distance: BaseDistance, pos: float | None, neg: float | None) -> tuple[float, float]:
    """Default (positive, negative) targets on the distance's own scale: pull positives to 0 and push negatives
    past 1 for a distance; for a similarity (cosine) the reverse, 1 and 0. PML's 0/1 would never push a
    cosine negative."""
    default_pos, default_neg = (1.0, 0.0) if distance.is_inverted else (0.0, 1.0)
    return (default_pos if pos is None else pos), (default_neg if neg is None else neg)


@LOSSES.register("contrastive", tags=("pair",), help={
    "pos_margin": "positives closer than this cost nothing (None: 0 for distances, 1 for similarities)",
    "neg_margin": "negatives farther than this cost nothing (None: 1 for distances, 0 for similarities)"})
def contrastive(distance: BaseDistance, num_classes: int, embedding_dim: int,
                pos_margin: float | None = None, neg_margin: float | None = None) -> nn.Module:
    """Contrastive: [d(a,p) − m_pos]_+ + [m_neg − d(a,n)]_+, each side averaged over its non-zero pairs."""
    pos, neg = _targets(distance, pos_margin, neg_margin)
    return pml_losses.ContrastiveLoss(pos_margin=pos, neg_margin=neg, distance=distance)


@LOSSES.register("triplet", tags=("pair",), help={"margin": "required gap d(a,n) − d(a,p)"})
def triplet(distance: BaseDistance, num_classes: int, embedding_dim: int, margin: float = 0.2) -> nn.Module:
    """Triplet: [d(a,p) − d(a,n) + m]_+ over every (or every mined) triplet, averaged over the non-zero ones."""
    _require(margin >= 0, f"triplet margin must be ≥ 0, got {margin}")
    return pml_losses.TripletMarginLoss(margin=margin, triplets_per_anchor="all", distance=distance)


@LOSSES.register("npair", tags=("pair",))
def npair(distance: BaseDistance, num_classes: int, embedding_dim: int) -> nn.Module:
    """N-pair: one (anchor, positive) per class, softmax over all positives with similarity −d (or cosine)."""
    return pml_losses.NPairsLoss(distance=distance)


class LiftedStructure(pml_losses.LiftedStructureLoss):
    """PML's `LiftedStructureLoss`, same values, margins and reducer, in O(B²) instead of O(|P|·|N|).

    PML masks every negative pair against every positive pair (seconds and gigabytes at B = 256). The negatives of
    pair (i, j) are those anchored at i or at j, so J_ij = logaddexp(LSE_i, LSE_j) + d_ij with LSE_i one logsumexp
    per anchor. Mined pairs may repeat: each copy counts, as in PML's sum over pair lists.
    """

    def pair_based_loss(self, mat: Tensor, indices_tuple: tuple[Tensor, ...]) -> dict:
        a1, p, a2, n = indices_tuple
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        copies = torch.zeros_like(mat).index_put_((a2, n), torch.ones_like(mat[a2, n]), accumulate=True)
        floor = torch.finfo(mat.dtype).min  # PML's "−inf": finite, so anchors without negatives keep finite gradients
        exponents = (self.distance.margin(self.neg_margin, mat) + copies.log()).masked_fill(copies == 0, floor)
        lse = torch.logsumexp(exponents, dim=1)
        both_ends = torch.where(a1 == p, lse[a1], torch.logaddexp(lse[a1], lse[p]))
        has_negatives = (copies > 0).any(dim=1)
        # A pair with no negative at either end gets PML's log-sum of nothing = 0, leaving [d_ij − m_pos]_+².
        neg_term = torch.where(has_negatives[a1] | has_negatives[p], both_ends, 0)
        losses = torch.relu(neg_term + self.distance.margin(mat[a1, p], self.pos_margin)) ** 2 / 2
        return {"loss": {"losses": losses, "indices": (a1, p), "reduction_type": "pos_pair"}}


@LOSSES.register("lifted_structure", tags=("pair",), help={
    "pos_margin": "target for positives (None: 0 for distances, 1 for similarities)",
    "neg_margin": "α, the margin negatives are pushed past (None: 1 for distances, 0 for similarities)"})
def lifted_structure(distance: BaseDistance, num_classes: int, embedding_dim: int,
                     pos_margin: float | None = None, neg_margin: float | None = None) -> nn.Module:
    """Lifted structure (Song et al., SPEC §1.2): [log(Σ e^{α−d_ik} + Σ e^{α−d_jl}) + d_ij]_+², mean / 2.

    PML's `LiftedStructureLoss` formula (each positive pair against the negatives of both its ends), not the
    `Generalized` one, which pools per anchor and is a different formula; computed by `LiftedStructure`.
    """
    pos, neg = _targets(distance, pos_margin, neg_margin)
    return LiftedStructure(pos_margin=pos, neg_margin=neg, distance=distance)


@LOSSES.register("multi_similarity", tags=("pair",), help={
    "alpha": "weight of positive pairs", "beta": "weight of negative pairs", "base": "the shift λ"})
def multi_similarity(distance: BaseDistance, num_classes: int, embedding_dim: int,
                     alpha: float = 2.0, beta: float = 50.0, base: float = 0.5) -> nn.Module:
    """Multi-similarity (Wang et al. 2019): soft-weighted positives and negatives around a shared base."""
    _require(alpha > 0 and beta > 0, f"multi_similarity alpha and beta must be > 0, got {alpha} and {beta}")
    return pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, distance=distance)


@LOSSES.register("proxy_nca", tags=("proxy",), help={"softmax_scale": "inverse temperature of the softmax"})
def proxy_nca(distance: BaseDistance, num_classes: int, embedding_dim: int, softmax_scale: float = 1.0) -> nn.Module:
    """Proxy-NCA: one learned proxy per class, softmax over −d(x, proxy) (or cosine) towards the own proxy."""
    _require(softmax_scale > 0, f"proxy_nca softmax_scale must be > 0, got {softmax_scale}")
    return pml_losses.ProxyNCALoss(num_classes, embedding_dim, softmax_scale=softmax_scale, distance=distance)


class ProxyAnchor(pml_losses.ProxyAnchorLoss):
    """Kim et al. 2020, eq. 4, for a similarity s (cosine) and for a distance d with s = −d (SPEC §8):

        ℓ = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}) + 1/|P| Σ_p log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)})

    so under a distance positives enter as e^{α(d + δ)} (always pulled; the paper's orientation, not PML's
    "pulled below +δ") and negatives as e^{−α(d − δ)}: pushed beyond δ. PML's class, handed a distance, keeps
    the similarity's offsets and computes e^{α(d − δ)} and e^{−α(d + δ)} — no margin left on the negatives.
    PML's `margin` is just the offset of its `distance.margin(·, ·)` calls, so the paper's form is PML's with
    that offset = −δ under a distance (and = δ under a similarity, where the two agree). `delta` is δ itself.
    The sample is the query of d(x, p) (first argument) for asymmetric distances.
    """

    def __init__(self, num_classes: int, embedding_dim: int, delta: float, alpha: float, distance: BaseDistance):
        offset = delta if distance.is_inverted else -delta
        super().__init__(num_classes, embedding_dim, margin=offset, alpha=alpha, distance=distance)
        self.delta = delta


@LOSSES.register("proxy_anchor", tags=("proxy",), help={
    "margin": "δ: positives are pulled past similarity δ, negatives pushed below −δ (under a distance, s = −d: "
              "negatives pushed beyond d = δ)",
    "alpha": "scale α"})
def proxy_anchor(distance: BaseDistance, num_classes: int, embedding_dim: int,
                 margin: float = 0.1, alpha: float = 32.0) -> nn.Module:
    """Proxy-Anchor (Kim et al. 2020, eq. 4 with s = −d under a distance): each proxy pulls its samples and pushes the
    rest past δ; the determinant paper's base loss."""
    _require(alpha > 0, f"proxy_anchor alpha must be > 0, got {alpha}")
    return ProxyAnchor(num_classes, embedding_dim, delta=margin, alpha=alpha, distance=distance)


@MINERS.register("none")
def no_miner(distance: BaseDistance) -> None:
    """No mining: the loss uses every pair / triplet of the batch."""
    return None


@MINERS.register("all", help={"margin": "keep triplets with d(a,n) − d(a,p) ≤ margin"})
def all_violating(distance: BaseDistance, margin: float = 0.2) -> nn.Module:
    """Every triplet that violates the margin (PML TripletMarginMiner, type "all")."""
    return pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="all", distance=distance)


@MINERS.register("semihard", help={"margin": "keep triplets with 0 < d(a,n) − d(a,p) ≤ margin"})
def semihard(distance: BaseDistance, margin: float = 0.2) -> nn.Module:
    """Semi-hard triplets: the negative is farther than the positive but within the margin (FaceNet)."""
    return pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=distance)


@MINERS.register("batch_hard")
def batch_hard(distance: BaseDistance) -> nn.Module:
    """Batch-hard: per anchor, the farthest positive and the closest negative (Hermans et al. 2017)."""
    return pml_miners.BatchHardMiner(distance=distance)


@MINERS.register("multi_similarity", help={"epsilon": "slack of the pair-selection rule"})
def multi_similarity_miner(distance: BaseDistance, epsilon: float = 0.1) -> nn.Module:
    """Multi-similarity mining: pairs that are harder than the easiest opposite pair, up to epsilon."""
    _require(epsilon >= 0, f"multi_similarity epsilon must be ≥ 0, got {epsilon}")
    return pml_miners.MultiSimilarityMiner(epsilon=epsilon, distance=distance)


class LossOutput(NamedTuple):
    loss: Tensor  # scalar, differentiable
    diagnostics: dict[str, float]  # active_count, active_fraction, embedding_norm (+ mined_count with a miner)


class _TermCounter(nn.Module):
    """Sits in front of a PML loss's reducer and counts the per-pair/triplet/proxy terms it is handed.

    The reducer is the one place that sees every term before averaging, so this costs one comparison per term
    and no second loss evaluation.
    """

    def __init__(self, reducer: nn.Module):
        super().__init__()
        self.reducer = reducer
        self.terms = 0
        self.active = 0

    def forward(self, loss_dict: dict, embeddings: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            per_term = [info["losses"] for info in loss_dict.values()
                        if info["reduction_type"] != "already_reduced" and torch.is_tensor(info["losses"])]
            self.terms = sum(t.numel() for t in per_term)
            self.active = sum(int((t > 0).sum()) for t in per_term)
        return self.reducer(loss_dict, embeddings, labels)


class DMLCriterion(nn.Module):
    """Miner + PML loss under one distance. `criterion(embeddings, labels) -> LossOutput`.

    Proxies (proxy losses) and a learnable distance's L are parameters of this module: give
    `criterion.parameters()` to the optimizer.
    """

    def __init__(self, loss: nn.Module, miner: nn.Module | None):
        super().__init__()
        self.loss = loss
        self.miner = miner
        self.counter = _TermCounter(loss.reducer)
        loss.reducer = self.counter

    @property
    def distance(self) -> BaseDistance:
        return self.loss.distance

    def forward(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        loss = self.loss(embeddings, labels, tuples)
        terms, active = self.counter.terms, self.counter.active
        with torch.no_grad():
            diagnostics = {
                "active_count": float(active),
                "active_fraction": active / terms if terms else 0.0,
                "embedding_norm": float(embeddings.norm(dim=1).mean()),
            }
        if tuples is not None:  # a triplet miner returns (a, p, n), a pair miner (a1, p, a2, n)
            diagnostics["mined_count"] = float(len(tuples[0]) + (len(tuples[2]) if len(tuples) == 4 else 0))
        return LossOutput(loss, diagnostics)


def check_pairing(loss: str, miner: str) -> None:
    """Reject a miner with a proxy loss: it would silently turn into per-sample weights that mean nothing there."""
    if "proxy" in LOSSES.entry(loss).tags and miner != "none":
        raise InvalidParameterError(
            f"miner.name: loss '{loss}' compares samples with learned class proxies, not with each other, "
            f"so miner '{miner}' (which picks pairs or triplets in the batch) has nothing to select; "
            f"set miner.name to 'none'")


def create_criterion(loss: LossConfig, miner: MinerConfig, distance: BaseDistance, num_classes: int,
                     embedding_dim: int) -> DMLCriterion:
    """Build loss + miner with `distance`; `num_classes` and `embedding_dim` size the proxies of proxy losses."""
    check_pairing(loss.name, miner.name)
    built_loss = LOSSES.create(loss.name, distance, num_classes, embedding_dim, **loss.params)
    built_miner = MINERS.create(miner.name, distance, **miner.params)
    return DMLCriterion(built_loss, built_miner)


def list_losses() -> list[str]:
    return LOSSES.names()


def list_miners() -> list[str]:
    return MINERS.names()
