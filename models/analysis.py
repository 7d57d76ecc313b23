"""Questions a researcher asks of one split's embedding: which images fail and by how much, which class pairs
touch or get confused, and how a chosen set of images sits against the rest.

Every value is a dissimilarity under the run's own distance (smaller = closer; 1 − similarity for cosine),
the row image as the anchor (asymmetric distances: SNR, relative Mahalanobis). Work is chunked by query rows
(`CHUNK_ELEMENTS`): time O(Q·N), memory O(chunk·N), never an N × N matrix.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance

from models.errors import InvalidInput
from models.evaluate import labels_of
from models.retrieval import CHUNK_ELEMENTS, as_tensor, device_of, dissimilarity

SORTS = ("margin", "lipschitz", "logdet")


def _blocks(x: torch.Tensor, rows: np.ndarray, distance: BaseDistance) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row ids, D) with D[i, j] = d(x[rows[i]], x[j]) as a float64 dissimilarity, self pairs = +inf."""
    step = max(1, CHUNK_ELEMENTS // max(1, len(x)))
    device = device_of(distance)
    for s in range(0, len(rows), step):
        ids = rows[s:s + step]
        with torch.no_grad():
            d = distance(x[torch.from_numpy(ids)].to(device), x.to(device)).cpu().double().numpy()
        d = dissimilarity(distance, d)
        d[np.arange(len(ids)), ids] = np.inf
        yield ids, d


def failures(embeddings: np.ndarray | torch.Tensor, labels: np.ndarray, distance: BaseDistance,
             k: int = 5) -> dict[str, np.ndarray]:
    """The images whose nearest other image has another class, with the numbers that say how badly.

    Returns arrays over those images (row positions in `embeddings`, ascending): `rows`; `margin` = d to the
    nearest image of another class − d to the farthest image of its own class (< 0 always for a failure; NaN
    for a class of one); `nearest_other` and `farthest_mate` (those two distances); `neighbours` (F, k) row
    ids of the k nearest other images and `distances` (F, k) theirs.
    """
    x = as_tensor(embeddings)
    y = labels_of(labels, len(x))
    k = max(1, min(k, len(x) - 1))
    out: dict[str, list[np.ndarray]] = {key: [] for key in ("rows", "nearest_other", "farthest_mate", "neighbours",
                                                            "distances")}
    for ids, d in _blocks(x, np.arange(len(x)), distance):
        nn = np.argmin(d, axis=1)
        wrong = y[nn] != y[ids]
        if not wrong.any():
            continue
        ids, d = ids[wrong], d[wrong]
        same = y[None, :] == y[ids, None]
        other = np.where(same, np.inf, d).min(axis=1)
        same[np.arange(len(ids)), ids] = False  # the image itself is no class mate
        mate = np.where(same, d, -np.inf).max(axis=1)
        top = np.argsort(d, axis=1, kind="stable")[:, :k]
        out["rows"].append(ids)
        out["nearest_other"].append(other)
        out["farthest_mate"].append(np.where(np.isfinite(mate), mate, np.nan))
        out["neighbours"].append(top)
        out["distances"].append(np.take_along_axis(d, top, axis=1))
    result = {key: np.concatenate(v) if v else np.zeros((0, k) if key in ("neighbours", "distances") else 0)
              for key, v in out.items()}
    result["rows"] = result["rows"].astype(np.int64)
    result["neighbours"] = result["neighbours"].astype(np.int64)
    result["margin"] = result["nearest_other"] - result["farthest_mate"]
    return result


def failure_order(values: np.ndarray, descending: bool) -> np.ndarray:
    """Positions of `values` worst first (the most negative margin; the largest Lipschitz or log|det J|), NaN
    last, ties in row order."""
    v = -values if descending else values
    return np.argsort(np.where(np.isnan(v), np.inf, v), kind="stable")


MAX_PAIR_CLASSES = 300  # a C × C matrix past this is neither computed quickly (11k classes: 2 GB) nor readable


def check_pair_classes(labels: np.ndarray) -> np.ndarray:
    """The classes present in `labels`; InvalidInput past MAX_PAIR_CLASSES (cheap, so a caller can check before it
    loads what the matrix needs)."""
    present = np.unique(labels)
    if len(present) > MAX_PAIR_CLASSES:
        raise InvalidInput(f"the class-pair matrix needs at most {MAX_PAIR_CLASSES} classes and this split has "
                           f"{len(present)}; the per-class table's nearest class and margin answer the same question "
                           "for every class")
    return present


def class_pairs(embeddings: np.ndarray | torch.Tensor, labels: np.ndarray, distance: BaseDistance,
                num_classes: int, k: int = 10) -> dict[str, Any]:
    """Per class pair: `gap` (C, C) = min over x ∈ C_k, y ∈ C_l of d(x, y) in either direction (SPEC §3.3;
    NaN on the diagonal and for an absent class) and `confusion` (C, C) = how many of the k nearest other
    images of the images of class k have class l (the diagonal: the right ones). `order`: the present classes
    ordered by average-linkage clustering on the gap matrix, so classes that touch sit side by side.
    More than `MAX_PAIR_CLASSES` present classes is refused before anything is allocated.
    """
    y = labels_of(labels, len(embeddings))
    present = check_pair_classes(y)
    x = as_tensor(embeddings)
    k = max(1, min(k, len(x) - 1))
    by_class = np.argsort(y, kind="stable")
    starts = np.searchsorted(y[by_class], present)
    gap = np.full((num_classes, num_classes), np.inf)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for ids, d in _blocks(x, np.arange(len(x)), distance):
        per_class = np.minimum.reduceat(d[:, by_class], starts, axis=1)  # (rows, present classes)
        np.minimum.at(gap, (np.repeat(y[ids], len(present)), np.tile(present, len(ids))), per_class.ravel())
        top = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.argsort(d, axis=1)[:, :k]
        np.add.at(confusion, (np.repeat(y[ids], k), y[top].ravel()), 1)
    gap = np.minimum(gap, gap.T)
    gap[~np.isfinite(gap)] = np.nan
    np.fill_diagonal(gap, np.nan)
    return {"present": present, "gap": gap, "confusion": confusion, "order": cluster_order(gap[np.ix_(present, present)],
                                                                                          present)}


def cluster_order(gap: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`labels` reordered by average-linkage clustering of the symmetric gap matrix (leaves left to right)."""
    if len(labels) < 3:
        return labels.copy()
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    d = np.nan_to_num(gap, nan=0.0)
    np.fill_diagonal(d, 0.0)
    return labels[leaves_list(linkage(squareform(d, checks=False), method="average", optimal_ordering=True))]


def selection(embeddings: np.ndarray | torch.Tensor, labels: np.ndarray, distance: BaseDistance,
              selected: np.ndarray, k: int = 10) -> dict[str, Any]:
    """How the rows `selected` sit against the rest of the split.

    `correct_at_1` of the selection and of the rest (nearest other image has the same class); `knn_inside`:
    the share of the selection's k nearest other images that are selected too (its cohesion; `expected` is
    that share for a random selection of the same size); `radius_mean`: mean d(centroid, member) of the
    selection and of the rest (the centroid as anchor, as in models.stats); `nearest_rest_mean`: mean d from
    a selected image to its nearest unselected one.
    """
    x = as_tensor(embeddings)
    y = labels_of(labels, len(x))
    n = len(x)
    mask = np.zeros(n, bool)
    mask[selected] = True
    if not mask.any():
        raise ValueError("the selection is empty: select at least one image")
    k = max(1, min(k, n - 1))
    correct = np.zeros(n, bool)
    inside, nearest_rest = [], []
    for ids, d in _blocks(x, np.arange(n), distance):
        correct[ids] = y[np.argmin(d, axis=1)] == y[ids]
        chosen = mask[ids]
        if chosen.any():
            top = np.argsort(d[chosen], axis=1, kind="stable")[:, :k]
            inside.append(mask[top].mean(axis=1))
            if (~mask).any():
                nearest_rest.append(np.where(mask[None, :], np.inf, d[chosen]).min(axis=1))

    def radius(rows: np.ndarray) -> float | None:
        if len(rows) < 2:
            return None
        members = x[torch.from_numpy(rows)]
        centre = members.mean(dim=0, keepdim=True).expand_as(members)
        with torch.no_grad():
            r = distance.pairwise_distance(centre.to(device_of(distance)), members.to(device_of(distance)))
        return float(dissimilarity(distance, r.cpu().double().numpy()).mean())

    rest = np.flatnonzero(~mask)
    mean = lambda v: float(np.mean(v)) if len(v) else None  # noqa: E731
    return {
        "size": int(mask.sum()), "rest_size": int(len(rest)),
        "class_counts": np.bincount(y[mask], minlength=int(y.max()) + 1),
        "class_totals": np.bincount(y, minlength=int(y.max()) + 1),
        "correct_at_1": {"selection": mean(correct[mask]), "rest": mean(correct[~mask])},
        "knn_inside": mean(np.concatenate(inside)), "expected": (mask.sum() - 1) / (n - 1) if n > 1 else None,
        "radius_mean": {"selection": radius(np.flatnonzero(mask)), "rest": radius(rest)},
        "nearest_rest_mean": mean(np.concatenate(nearest_rest)) if nearest_rest else None,
    }
