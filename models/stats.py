"""Geometry of an embedding under the run's own distance: class radii, density, margins, spectrum (the
per-sample maps of the determinant paper are in models.sample_maps).

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

from typing import Any, Sequence

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance
from torch import Tensor

from models.evaluate import labels_of
from models.knn import self_knn
from models.retrieval import CHUNK_ELEMENTS, as_tensor, device_of, dissimilarity, exact_values, view_of

# Means over pairs (π_intra per class, π_inter) use at most this many members/centroids, a seeded sample beyond:
# 512² pairs put the sampling error far below what a chart shows, and bound the cost of the B × B distance matrix.
MEAN_SAMPLE = 512
# Classes up to this size get their intra-class pairs (δ1, π_intra) from one batched call over all their ordered
# pairs (≤ 4 032 each) instead of a loop over classes: SOP's 11k classes of 2–12 images took minutes in the loop.
SMALL_CLASS = 64
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


def _nearest_other_class(distance: BaseDistance, x: Tensor, starts: np.ndarray, class_of: np.ndarray,
                         device: torch.device) -> np.ndarray:
    """Id of every anchor's nearest sample of another class; samples sorted by class (class c is the
    contiguous range starts[c]:starts[c + 1]). With small classes (≤ SMALL_CLASS) it is among each sample's
    (largest class size) nearest others: the exact self-k-NN, each pair's product once. Otherwise a blocked
    argmin over every sample with the own class masked (a band of columns per chunk, not an N × N mask)."""
    largest = int(np.diff(starts).max())
    if largest <= SMALL_CLASS:
        vectors, metric = view_of(distance, x)
        ids = self_knn(torch.from_numpy(vectors), metric, min(largest, len(x) - 1), device=device)
        return ids[np.arange(len(ids)), np.argmax(class_of[ids] != class_of[:, None], axis=1)]
    ranking = _Ranking(distance, x, device)
    n = len(class_of)
    rows = max(1, CHUNK_ELEMENTS // n)
    ids = np.empty(n, dtype=np.int64)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        block = ranking.block(slice(s, e), slice(0, n))
        # the rows' own classes span one band of columns: mask it in one vectorised step, not a step per class
        b0, b1 = starts[class_of[s]], starts[class_of[e - 1] + 1]
        lo, hi = (torch.from_numpy(starts[class_of[s:e] + k] - b0).to(block.device)[:, None] for k in (0, 1))
        band = torch.arange(b1 - b0, device=block.device)[None, :]
        block[:, b0:b1].masked_fill_((band >= lo) & (band < hi), float("inf"))
        ids[s:e] = block.argmin(dim=1).cpu().numpy()
    return ids


def _farthest_same_class(ranking: _Ranking, starts: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Id of every anchor's farthest member of its own class, for the members of `classes` (samples sorted by
    class as above); other samples get their own id (distance 0)."""
    ids = np.arange(starts[-1])
    for c0, c1 in zip(starts[classes], starts[classes + 1]):
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


def _small_class_pairs(distance: BaseDistance, x: Tensor, starts: np.ndarray, classes: np.ndarray,
                       device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per class of `classes` (each of ≥ 2 members): (largest, sum) of d(a, b) over its ordered pairs a ≠ b, a as
    anchor, as dissimilarities — every pair of every class in batched calls, grouped by class size."""
    anchors, others, owner = [], [], []
    for size in np.unique(starts[classes + 1] - starts[classes]):
        group = np.flatnonzero(starts[classes + 1] - starts[classes] == size)
        i, j = np.nonzero(~np.eye(size, dtype=bool))  # every ordered pair of distinct members
        base = starts[classes[group]][:, None]
        anchors.append((base + i).ravel()), others.append((base + j).ravel()), owner.append(np.repeat(group, len(i)))
    anchors, others, owner = np.concatenate(anchors), np.concatenate(others), np.concatenate(owner)
    values = np.empty(len(anchors))
    step = max(1, CHUNK_ELEMENTS // x.shape[1])
    for s in range(0, len(anchors), step):
        chunk = torch.from_numpy(anchors[s:s + step]).to(x.device)
        values[s:s + step] = exact_values(distance, x[chunk], x, others[s:s + step, None], device)[:, 0]
    values = dissimilarity(distance, values)
    largest = np.full(len(classes), -np.inf)
    np.maximum.at(largest, owner, values)
    return largest, np.bincount(owner, weights=values, minlength=len(classes))


def _intra_class_pairs(distance: BaseDistance, x: Tensor, on_device: Tensor, starts: np.ndarray, counts: np.ndarray,
                       rng: np.random.Generator, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per class (NaN below 2 members): δ1, its largest intra-class pair distance, and the mean over its ordered
    pairs (on ≤ MEAN_SAMPLE members). Small classes in batched calls; each larger one on its own, the farthest
    member found by ranking, the mean on a sample drawn from `rng` in class order."""
    delta1, intra_mean = np.full(len(counts), np.nan), np.full(len(counts), np.nan)
    small = np.flatnonzero((counts >= 2) & (counts <= min(SMALL_CLASS, MEAN_SAMPLE)))
    large = np.flatnonzero(counts > min(SMALL_CLASS, MEAN_SAMPLE))
    if len(small):
        delta1[small], sums = _small_class_pairs(distance, on_device, starts, small, device)
        intra_mean[small] = sums / (counts[small] * (counts[small] - 1))
    if len(large):
        farthest = _pair_values(distance, x, _farthest_same_class(_Ranking(distance, x, device), starts, large),
                                device)
        for c in large:
            delta1[c] = farthest[starts[c]:starts[c + 1]].max()
            intra_mean[c] = _mean_pair_distance(distance, on_device[starts[c]:starts[c + 1]], rng, device)
    return delta1, intra_mean


def _radii(distance: BaseDistance, x: Tensor, centroids: Tensor, class_of: np.ndarray) -> np.ndarray:
    """d(μ_c, x) of every sample, its class's centroid as anchor, as dissimilarities (chunked)."""
    out = np.empty(len(x))
    step = max(1, CHUNK_ELEMENTS // x.shape[1])
    with torch.no_grad():
        for s in range(0, len(x), step):
            anchors = centroids[torch.from_numpy(class_of[s:s + step]).to(centroids.device)]
            out[s:s + step] = distance.pairwise_distance(anchors, x[s:s + step]).cpu().double().numpy()
    return dissimilarity(distance, out)


def _segment_percentile(values: np.ndarray, starts: np.ndarray, q: float) -> np.ndarray:
    """numpy's linear-interpolation percentile q of each segment starts[c]:starts[c + 1] (none empty)."""
    segment = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    ordered = values[np.lexsort((values, segment))]
    position = q / 100 * (np.diff(starts) - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.diff(starts) - 1)
    low, high = ordered[starts[:-1] + below], ordered[starts[:-1] + above]
    return low + (high - low) * (position - below)


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

    if len(classes) > 1:
        other_ids = _nearest_other_class(distance, x, starts, class_of, device)
        other = _pair_values(distance, x, other_ids, device)
        centroid_gap = _pair_values(distance, centroids,
                                    _nearest_other_centroid(_Ranking(distance, centroids, device)), device)
    radii = _radii(distance, on_device, centroids_on_device, class_of)
    radius_mean, radius_max = np.bincount(class_of, weights=radii) / counts, np.maximum.reduceat(radii, starts[:-1])
    radius_p95 = _segment_percentile(radii, starts, 95)
    rng = np.random.default_rng(0)  # one stream: the large classes' samples in class order, then the centroids'
    delta1, intra_mean = _intra_class_pairs(distance, x, on_device, starts, counts, rng, device)

    per_class, intra_means = [], []
    for c, label in enumerate(classes):
        lo, hi = starts[c], starts[c + 1]
        spread = float(radius_mean[c]) if counts[c] > 1 else None  # one sample has no spread (not 1/rounding)
        record: dict[str, Any] = {
            "label": int(label), "name": class_names[label] if class_names is not None else str(label),
            "count": int(counts[c]), "radius_mean": float(radius_mean[c]), "radius_max": float(radius_max[c]),
            "radius_p95": float(radius_p95[c]), "spread": spread, "density": _ratio(1.0, spread),
            "nearest_centroid_distance": None, "relative_density": None,
            "nearest_class": None, "gap": None, "delta1": None, "margin": None,
        }
        if len(classes) > 1:
            best = lo + int(np.argmin(other[lo:hi]))
            record.update(nearest_centroid_distance=float(centroid_gap[c]),
                          relative_density=_ratio(float(centroid_gap[c]), spread),
                          nearest_class=int(classes[class_of[other_ids[best]]]), gap=float(other[best]))
        if counts[c] > 1:
            record["delta1"] = float(delta1[c])
            if record["gap"] is not None:
                record["margin"] = record["gap"] - record["delta1"]
            intra_means.append(float(intra_mean[c]))
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
