"""Geometry of an embedding under the run's own distance: class radii, density, margins, spectrum; and the
per-sample maps of the determinant paper (log|det J|, local Lipschitz constant, geometric stretch).

Every value is a dissimilarity (smaller = closer): for cosine, 1 − cosine similarity. Asymmetric distances
(SNR, relative Mahalanobis) need an anchor, always the first argument:
- radius: the class centroid is the anchor, d(μ_c, x) — one fixed reference frame for the whole class;
- intra-class (δ1) and cross-class (gap, δ2) distances: every ordered pair, the member as anchor, as in
  retrieval with that member as the query; centroid gaps: d(μ_c, μ_c') with c's centroid as anchor.

Memory stays bounded for N ≈ 100k: work is chunked (`CHUNK_ELEMENTS`), never an N × N matrix. Extremes (each
sample's nearest other-class point, farthest class mate, each centroid's nearest other centroid) are exact:
found by ranking on the retrieval view (SPEC §6) with a BLAS product per chunk, then only the chosen pair's
value is recomputed with the distance itself. Means over all pairs (π_intra, π_inter) use at most
`MEAN_SAMPLE` members (centroids) per class, a seeded sample beyond.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance
from torch import Tensor, nn

from models.evaluate import labels_of
from models.flow import FlowMetricLayer, sphere_log_volume
from models.retrieval import CHUNK_ELEMENTS, as_tensor, device_of, dissimilarity, exact_values, view_of

# Means over pairs (π_intra per class, π_inter) use at most this many members/centroids, a seeded sample beyond:
# 512² pairs put the sampling error far below what a chart shows, and bound the cost of the B × B distance matrix.
MEAN_SAMPLE = 512
# Singular values below this share of the spectrum count as this share: a collapsed direction gives a large,
# finite spectral decay instead of inf (which JSON cannot carry).
_MIN_SPECTRUM_SHARE = 1e-12


class _Ranking:
    """Scores that order references for each anchor exactly as the distance does, smaller = closer (SPEC §6):
    ‖r‖² − 2⟨a, r⟩ on an L2 retrieval view, −⟨a, r⟩ on an inner-product one — one BLAS product per block.
    Only the chosen pairs' values are then recomputed with the distance itself."""

    def __init__(self, distance: BaseDistance, x: Tensor, device: torch.device):
        vectors, metric = view_of(distance, x)
        self.v = torch.from_numpy(vectors).to(device)
        self.ref_term = (self.v * self.v).sum(dim=1) if metric == "l2" else self.v.new_zeros(len(self.v))
        self.scale = 2.0 if metric == "l2" else 1.0

    def block(self, rows: slice, cols: slice) -> Tensor:
        a, b = self.v[rows], self.v[cols]
        return torch.addmm(self.ref_term[cols].expand(len(a), len(b)), a, b.T, alpha=-self.scale)


def _nearest_other_class(ranking: _Ranking, starts: np.ndarray, class_of: np.ndarray) -> np.ndarray:
    """Id of every anchor's nearest sample of another class; samples sorted by class (class c is the
    contiguous range starts[c]:starts[c + 1]), so masking one's own class is a slice, not an N × N mask."""
    n = len(class_of)
    rows = max(1, CHUNK_ELEMENTS // n)
    ids = np.empty(n, dtype=np.int64)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        block = ranking.block(slice(s, e), slice(0, n))
        for c in range(class_of[s], class_of[e - 1] + 1):
            block[max(starts[c], s) - s:min(starts[c + 1], e) - s, starts[c]:starts[c + 1]] = float("inf")
        ids[s:e] = block.argmin(dim=1).cpu().numpy()
    return ids


def _farthest_same_class(ranking: _Ranking, starts: np.ndarray) -> np.ndarray:
    """Id of every anchor's farthest member of its own class (samples sorted by class as above)."""
    ids = np.arange(starts[-1])  # in a class of one, the sample itself (distance 0)
    for c0, c1 in zip(starts[:-1], starts[1:]):
        if c1 - c0 < 2:
            continue
        rows = max(1, CHUNK_ELEMENTS // (c1 - c0))
        for s in range(c0, c1, rows):
            e = min(c1, s + rows)
            ids[s:e] = c0 + ranking.block(slice(s, e), slice(c0, c1)).argmax(dim=1).cpu().numpy()
    return ids


def _nearest_other_centroid(ranking: _Ranking) -> np.ndarray:
    """Id of every centroid's nearest other centroid, that centroid as anchor."""
    c = len(ranking.v)
    rows = max(1, CHUNK_ELEMENTS // c)
    ids = np.empty(c, dtype=np.int64)
    for s in range(0, c, rows):
        block = ranking.block(slice(s, min(c, s + rows)), slice(0, c))
        diagonal = torch.arange(len(block), device=block.device)
        block[diagonal, diagonal + s] = float("inf")
        ids[s:s + len(block)] = block.argmin(dim=1).cpu().numpy()
    return ids


def _mean_pair_distance(distance: BaseDistance, points: Tensor, rng: np.random.Generator,
                        device: torch.device) -> float | None:
    """Mean d(a, b) over ordered pairs a ≠ b, on at most MEAN_SAMPLE points (a seeded sample beyond)."""
    if len(points) < 2:
        return None
    if len(points) > MEAN_SAMPLE:
        chosen = torch.from_numpy(np.sort(rng.choice(len(points), MEAN_SAMPLE, replace=False)))
        points = points[chosen.to(points.device)]
    with torch.no_grad():
        values = dissimilarity(distance, distance(points.to(device), points.to(device)).cpu().double().numpy())
    np.fill_diagonal(values, 0.0)
    return float(values.sum()) / (len(points) * (len(points) - 1))


def _pair_values(distance: BaseDistance, x: Tensor, ids: np.ndarray, device: torch.device) -> np.ndarray:
    """d(x_i, x_ids[i]) for every i, anchor first, as dissimilarities."""
    values = exact_values(distance, x, x, ids[:, None], device)[:, 0]
    return dissimilarity(distance, values.astype(np.float64))


def _spectral_decay(distance: BaseDistance, x: Tensor) -> float:
    """ρ(Φ) = KL(U ‖ S_Φ): uniform vs normalised singular values of the (normalised, if the distance says so)
    embeddings, as Roth et al. 2020 — 0 for a perfectly isotropic spectrum, large when few directions dominate."""
    s = torch.linalg.svdvals(distance.maybe_normalize(x).double())
    share = (s / s.sum()).clamp_min(_MIN_SPECTRUM_SHARE)
    uniform = 1.0 / len(s)
    return float((uniform * torch.log(uniform / share)).sum())


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def class_stats(embeddings: np.ndarray | Tensor, labels: np.ndarray | Tensor, distance: BaseDistance,
                class_names: Sequence[str] | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    """Per-class and global compactness/separation statistics of one split.

    Returns {"per_class": [...], "global": {...}, "centroids": ndarray (C, D)} — centroids is the only value
    that is not JSON (save it as .npy); everything else is float/int/str or None where undefined.
    Per class (label order): label, name (`class_names[label]`), count; radius_mean / radius_max / radius_p95
    (d(μ_c, x) over members); spread s_c (= radius_mean, SPEC §2.2); density 1/s_c; relative_density
    min_c' d(μ_c, μ_c') / s_c and that nearest_centroid_distance — both an *approximation* of Li et al.
    (SPEC §2.2 [R]); nearest_class and gap (smallest cross-class pair distance from a member = the class's δ2);
    delta1 (largest intra-class pair distance) and margin = gap − delta1 (seed 000 eq. 1; < 0: violated).
    Global: delta1, delta2, margin; pi_intra (mean over classes of the mean intra-class pair distance),
    pi_inter (mean centroid-pair distance) — both on ≤ MEAN_SAMPLE points per set —, pi_ratio =
    pi_intra / pi_inter, spectral_decay (SPEC §2.3).

    The products, distances and the spectrum run on `device` (by default the distance's; it must hold the
    distance's parameters), chunk by chunk; centroids are summed on the CPU (CUDA's index_add_ is not
    deterministic) and every result comes back to the CPU.
    """
    x = as_tensor(embeddings)
    y = labels_of(labels, len(x))
    classes, class_of, counts = np.unique(y, return_inverse=True, return_counts=True)
    order = np.argsort(class_of, kind="stable")
    x, class_of = x[torch.from_numpy(order)], class_of[order]  # sorted by class: class c is starts[c]:starts[c+1]
    starts = np.concatenate([[0], np.cumsum(counts)])
    centroids = torch.zeros(len(classes), x.shape[1]).index_add_(0, torch.from_numpy(class_of), x)
    centroids /= torch.from_numpy(counts).float()[:, None]
    device = torch.device(device) if device is not None else device_of(distance)
    on_device, centroids_on_device = x.to(device), centroids.to(device)

    ranking = _Ranking(distance, x, device)
    farthest = _pair_values(distance, x, _farthest_same_class(ranking, starts), device)
    if len(classes) > 1:
        other_ids = _nearest_other_class(ranking, starts, class_of)
        other = _pair_values(distance, x, other_ids, device)
        centroid_gap = _pair_values(distance, centroids,
                                    _nearest_other_centroid(_Ranking(distance, centroids, device)), device)

    rng = np.random.default_rng(0)
    per_class, intra_means = [], []
    for c, label in enumerate(classes):
        lo, hi = starts[c], starts[c + 1]
        members = on_device[lo:hi]
        with torch.no_grad():
            radii = distance.pairwise_distance(centroids_on_device[c].expand_as(members), members)
        radii = dissimilarity(distance, radii.cpu().double().numpy())
        spread = float(radii.mean()) if counts[c] > 1 else None  # one sample has no spread (not 1/rounding)
        record: dict[str, Any] = {
            "label": int(label), "name": class_names[label] if class_names is not None else str(label),
            "count": int(counts[c]), "radius_mean": float(radii.mean()), "radius_max": float(radii.max()),
            "radius_p95": float(np.percentile(radii, 95)), "spread": spread, "density": _ratio(1.0, spread),
            "nearest_centroid_distance": None, "relative_density": None,
            "nearest_class": None, "gap": None, "delta1": None, "margin": None,
        }
        if len(classes) > 1:
            best = lo + int(np.argmin(other[lo:hi]))
            record.update(nearest_centroid_distance=float(centroid_gap[c]),
                          relative_density=_ratio(float(centroid_gap[c]), spread),
                          nearest_class=int(classes[class_of[other_ids[best]]]), gap=float(other[best]))
        if counts[c] > 1:
            record["delta1"] = float(farthest[lo:hi].max())
            if record["gap"] is not None:
                record["margin"] = record["gap"] - record["delta1"]
            intra_means.append(_mean_pair_distance(distance, members, rng, device))
        per_class.append(record)

    delta1s = [r["delta1"] for r in per_class if r["delta1"] is not None]
    gaps = [r["gap"] for r in per_class if r["gap"] is not None]
    delta1, delta2 = (max(delta1s) if delta1s else None), (min(gaps) if gaps else None)
    pi_intra = float(np.mean(intra_means)) if intra_means else None
    pi_inter = _mean_pair_distance(distance, centroids_on_device, rng, device)
    return {
        "per_class": per_class,
        "global": {
            "num_samples": len(x), "num_classes": len(classes),
            "delta1": delta1, "delta2": delta2,
            "margin": delta2 - delta1 if delta1 is not None and delta2 is not None else None,
            "pi_intra": pi_intra, "pi_inter": pi_inter, "pi_ratio": _ratio(pi_intra, pi_inter),
            "spectral_decay": _spectral_decay(distance, on_device),
        },
        "centroids": centroids.numpy(),
    }


def flow_map(flow: FlowMetricLayer, features: np.ndarray | Tensor, per_sample: Callable[[Tensor], Tensor],
             batch_size: int = 256) -> np.ndarray:
    """`per_sample(u) -> (B,)` over the flow's inputs `features` (N, D) by batches, in eval mode, no grad (the
    caller's mode is restored); `features` on any device, the result (N,) on the CPU."""
    device = device_of(flow)
    was_training = flow.training
    flow.eval()
    try:
        with torch.no_grad():
            parts = [per_sample(torch.as_tensor(features[s:s + batch_size]).to(device)).cpu()
                     for s in range(0, len(features), batch_size)]
    finally:
        flow.train(was_training)
    return torch.cat(parts).numpy()


def logdet_map(flow: FlowMetricLayer, features: np.ndarray | Tensor, batch_size: int = 256) -> np.ndarray:
    """Per sample (N,), what the `det` regulariser penalises: the log-volume change of the flow's sphere-to-sphere
    map u ↦ flow(u)/‖flow(u)‖ at each input u (`models.flow.sphere_log_volume`); `features` are the flow's
    inputs (unit-norm head outputs)."""
    return flow_map(flow, features, lambda u: sphere_log_volume(flow, u, *flow(u)), batch_size)


def _per_sample_norm(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1).view(-1, *([1] * (t.dim() - 1)))


def local_lipschitz(fn: Callable[[Tensor], Tensor], x: Tensor, iters: int = 20, batch_size: int = 512,
                    seed: int = 0, tol: float = 0.0) -> np.ndarray:
    """Largest singular value of the Jacobian of `fn` at each sample (N,) — the local Lipschitz constant.

    `fn` maps a batch (B, ...) to (B, D) and must treat samples independently (a model in eval mode). That
    lets one reverse pass over the whole batch give every sample's Jᵀu at once (the gradient of Σᵢ⟨fᵢ, uᵢ⟩),
    and its double backward every Jv: power iteration on JᵀJ costs two batched reverse passes per step —
    ~10× faster here than vmapping the same product one sample at a time. Power iteration from a seeded
    random direction approaches σ_max from below; 20 iterations are plenty unless the top two singular
    values nearly coincide. With tol > 0 a batch stops early once no estimate moved by more than tol
    (relative) in one iteration.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    parts = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].detach().requires_grad_(True)
        v = torch.randn(xb.shape, generator=generator, dtype=xb.dtype).to(xb.device)
        with torch.enable_grad():
            out = fn(xb)
            u = torch.zeros_like(out, requires_grad=True)
            (jt_u,) = torch.autograd.grad(out, xb, u, create_graph=True)  # Jᵀu, linear in u
            previous = None
            for step in range(iters + 1):
                v = v / (_per_sample_norm(v) + torch.finfo(v.dtype).tiny)
                (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)  # J v
                sigma = _per_sample_norm(jv).flatten().detach()
                if step == iters or (previous is not None and bool(((sigma - previous).abs() <= tol * sigma).all())):
                    break
                previous = sigma
                (v,) = torch.autograd.grad(out, xb, jv, retain_graph=True)  # Jᵀ J v
        parts.append(sigma.cpu())
    return torch.cat(parts).numpy()


def geometric_stretch(logdet: np.ndarray, dim: int) -> np.ndarray:
    """exp(log|det J| / dim): the geometric mean of J's `dim` singular values (dim = D − 1 for the flow's
    sphere map) — volume growth per direction, a lower
    bound on the local Lipschitz constant (SPEC §3.3), not the worst-direction stretch."""
    return np.exp(np.asarray(logdet, dtype=np.float64) / dim)
