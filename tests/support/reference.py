"""Slow, obviously-correct reference loops: one pair, one triplet at a time, written from the formulas in SPEC.md
(plus `random_flow64`, the float64 flow the flow and regulariser checks run on).

The library code is vectorised (and mostly PML's); these loops share nothing with it but the formulas, so an
agreement between the two is evidence, not a tautology. `margin(x, y)` follows PML: how far x exceeds y in the
"farther" direction (x − y for distances, y − x for similarities).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

PairFn = Callable[[Tensor, Tensor], float]


def random_flow64(dim: int, depth: int, coupling: str = "affine"):
    """A flow built (not just cast) in float64 — so its orthogonal mixing is orthogonal to float64 precision —
    with every parameter perturbed: at init the flow is the identity, which would prove nothing."""
    from models.flow import FlowMetricLayer

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        flow = FlowMetricLayer(dim, depth, hidden=16, coupling=coupling)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def pair_distance(name: str, distance=None, differentiable: bool = False) -> PairFn:
    """d(a, b) for one query a and one reference b, straight from the definition (cosine: the similarity).

    A float, or with `differentiable` a 0-d tensor in the graph of a and b (for reference gradients).
    """
    if name in ("mahalanobis", "relative_mahalanobis"):
        M = distance.metric_matrix().detach().double()

    def value(a: Tensor, b: Tensor) -> Tensor:
        if name == "euclidean":
            return (a - b).pow(2).sum().sqrt()
        if name == "squared_euclidean":
            return (a - b).pow(2).sum()
        if name == "cosine":
            return (a @ b) / (a.norm() * b.norm())
        if name == "snr":
            return torch.var(b - a) / torch.var(a)
        if name == "mahalanobis":
            return ((a - b) @ M @ (a - b)).sqrt()
        if name == "relative_mahalanobis":
            return ((a - b) @ M @ (a - b)) / (a @ M @ a)
        raise KeyError(f"no reference for distance {name!r}; add one here")

    return value if differentiable else lambda a, b: float(value(a, b))


def distance_matrix(d: PairFn, q: Tensor, r: Tensor) -> Tensor:
    """(Q, R) of d(q_i, r_j); stays in the graph when `d` returns tensors."""
    return torch.stack([torch.stack([torch.as_tensor(d(q[i], r[j]), dtype=torch.float64) for j in range(len(r))])
                        for i in range(len(q))])


def _margin(inverted: bool, x: float, y: float) -> float:
    return y - x if inverted else x - y


def _relu(x: float) -> float:
    return max(0.0, x)


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def _log1p_sumexp(xs: list[float]) -> float:
    """log(1 + Σ e^x), stable for the large exponents of proxy-anchor and multi-similarity."""
    return _logsumexp([0.0, *xs])


def _mean_nonzero(values: list[float]) -> float:
    nz = [v for v in values if v > 0]
    return sum(nz) / len(nz) if nz else 0.0


def _pairs(labels: list[int], same: bool) -> list[tuple[int, int]]:
    n = len(labels)
    return [(i, j) for i in range(n) for j in range(n) if i != j and (labels[i] == labels[j]) == same]


def contrastive(D: Tensor, labels: list[int], inverted: bool, pos_margin: float, neg_margin: float) -> float:
    """mean_{pos, >0} [m(d, m_pos)]_+ + mean_{neg, >0} [m(m_neg, d)]_+ over ordered pairs."""
    pos = [_relu(_margin(inverted, float(D[i, j]), pos_margin)) for i, j in _pairs(labels, True)]
    neg = [_relu(_margin(inverted, neg_margin, float(D[i, j]))) for i, j in _pairs(labels, False)]
    return _mean_nonzero(pos) + _mean_nonzero(neg)


def triplet(D: Tensor, labels: list[int], inverted: bool, margin: float) -> float:
    """mean over non-zero terms of [d(a,p) − d(a,n) + m]_+ over every (a, p, n)."""
    terms = []
    for a, p in _pairs(labels, True):
        for n in range(len(labels)):
            if labels[n] != labels[a]:
                terms.append(_relu(_margin(inverted, float(D[a, p]), float(D[a, n])) + margin))
    return _mean_nonzero(terms)


def lifted_structure(D: Tensor, labels: list[int], inverted: bool, pos_margin: float, neg_margin: float) -> float:
    """Song et al.: J_ij = log(Σ_k e^{m_neg − d_ik} + Σ_l e^{m_neg − d_jl}) + d_ij − m_pos; L = (1/2|P|) Σ [J]_+²."""
    terms = []
    for i, j in _pairs(labels, True):
        negs = [(i, k) for k in range(len(labels)) if labels[k] != labels[i]]
        negs += [(j, l) for l in range(len(labels)) if labels[l] != labels[j]]
        if not negs:
            continue
        lse = _logsumexp([_margin(inverted, neg_margin, float(D[x, y])) for x, y in negs])
        terms.append(_relu(lse + _margin(inverted, float(D[i, j]), pos_margin)) ** 2 / 2)
    return sum(terms) / len(terms) if terms else 0.0


def npair(D_fn: Callable[[list[int], list[int]], Tensor], labels: list[int], inverted: bool) -> float:
    """One (anchor, positive) per class: the first two samples of it; softmax over all positives, target its own.

    `D_fn(anchors, positives)` gives the anchor × positive distance matrix.
    """
    anchors, positives = [], []
    for c in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == c]
        if len(members) >= 2:
            anchors.append(members[0])
            positives.append(members[1])
    if not anchors:
        return 0.0
    D = D_fn(anchors, positives)
    total = 0.0
    for i in range(len(anchors)):
        logits = [float(D[i, j]) if inverted else -float(D[i, j]) for j in range(len(anchors))]
        total += _logsumexp(logits) - logits[i]
    return total / len(anchors)


def multi_similarity(D: Tensor, labels: list[int], inverted: bool, alpha: float, beta: float, base: float) -> float:
    """Wang et al.: mean_i (1/α) log(1 + Σ_p e^{α m(d,base)}) + (1/β) log(1 + Σ_n e^{β m(base,d)})."""
    total = 0.0
    for i in range(len(labels)):
        pos = [_margin(inverted, float(D[i, j]), base) for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        neg = [_margin(inverted, base, float(D[i, j])) for j in range(len(labels)) if labels[j] != labels[i]]
        if pos:
            total += _log1p_sumexp([alpha * x for x in pos]) / alpha
        if neg:
            total += _log1p_sumexp([beta * x for x in neg]) / beta
    return total / len(labels)


def proxy_nca(D: Tensor, labels: list[int], inverted: bool, scale: float) -> float:
    """D: sample × proxy. mean_i −log softmax_c(scale · s_ic)[y_i], s = −d for distances."""
    total = 0.0
    for i, y in enumerate(labels):
        logits = [scale * (float(D[i, c]) if inverted else -float(D[i, c])) for c in range(D.shape[1])]
        total += _logsumexp(logits) - logits[y]
    return total / len(labels)


def proxy_anchor(S: Tensor, labels: list[int], delta: float, alpha: float) -> Tensor:
    """Kim et al. 2020 eq. 4 on a sample × proxy *similarity* S (S = −D for a distance, SPEC §8):
    1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}) + 1/|P| Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)}).

    Term by term in torch scalars, so autograd gives the reference gradients too.
    """
    zero = S.new_zeros(())
    pos_terms, neg_terms = [], []
    for p in range(S.shape[1]):
        pos = [-alpha * (S[x, p] - delta) for x, y in enumerate(labels) if y == p]
        neg = [alpha * (S[x, p] + delta) for x, y in enumerate(labels) if y != p]
        if pos:
            pos_terms.append(torch.logsumexp(torch.stack([zero, *pos]), dim=0))
        neg_terms.append(torch.logsumexp(torch.stack([zero, *neg]), dim=0))
    positive = torch.stack(pos_terms).sum() / len(pos_terms) if pos_terms else zero
    return positive + torch.stack(neg_terms).sum() / S.shape[1]


def length(name: str, distance=None) -> Callable[[Tensor, Tensor], Tensor]:
    """The length a distance is built on, anchor a first: d itself for euclidean / mahalanobis, √d for squared
    Euclidean, the chord between unit vectors for cosine, and for the relative distances the length of their
    numerator: ‖(b − b̄) − (a − ā)‖ for SNR (√(d_S(a, b)) × ‖a − ā‖), √((a − b)ᵀM(a − b)) for relative
    Mahalanobis (√(d_RM(a, b) · aᵀMa)) — the anchor's energy, common to every length from one anchor, left out."""
    if name in ("mahalanobis", "relative_mahalanobis"):
        M = distance.metric_matrix().detach().double()
        return lambda a, b: ((a - b) @ M @ (a - b)).sqrt()
    if name == "snr":
        return lambda a, b: ((b - b.mean()) - (a - a.mean())).pow(2).sum().sqrt()
    if name == "cosine":
        return lambda a, b: (a / a.norm() - b / b.norm()).pow(2).sum().sqrt()
    if name in ("euclidean", "squared_euclidean"):
        return lambda a, b: (a - b).pow(2).sum().sqrt()
    raise KeyError(f"no reference length for distance {name!r}; add one here")


def density(x: Tensor, labels: list[int], tau: float, ell: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """SPEC §2.2 with the gap as a stop-gradient scale: mean over classes with ≥ 2 samples (if ≥ 2 such) of
    [g_c / s_c − τ]_+, s_c = mean_i ℓ(μ_c, f_i), g_c = min_{c'≠c} ℓ(μ_c, μ_c') computed without gradient."""
    classes = sorted(c for c in set(labels) if labels.count(c) >= 2)
    if len(classes) < 2:
        return x.sum() * 0
    centroid = {c: torch.stack([x[i] for i, y in enumerate(labels) if y == c]).mean(0) for c in classes}
    terms = []
    for c in classes:
        members = [x[i] for i, y in enumerate(labels) if y == c]
        spread = sum(ell(centroid[c], m) for m in members) / len(members)
        with torch.no_grad():
            gap = min(ell(centroid[c], centroid[o]) for o in classes if o != c)
        terms.append(torch.relu(gap / spread - tau))
    return torch.stack(terms).mean()
