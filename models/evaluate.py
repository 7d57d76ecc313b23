"""Retrieval and clustering metrics of one split, under the run's own distance.

One exact, self-excluded k-NN search (`models.knn.self_knn` on `distance.retrieval_view`: blocked matrix
products, each pair once, reranked in float64, ties by smaller id) with k = max(largest class − 1, max(ks))
feeds every k-NN metric, so MAP@R sees all R relevant items of the largest class. Definitions are PML's AccuracyCalculator's (Musgrave et al. 2020), and the values equal
its values for Euclidean: queries whose class has no other member cannot be answered and are left out of
every k-NN metric (PML's "lone query" rule). The metric arithmetic is vectorised over query chunks, which is
what makes this faster than PML with many classes (PML loops over classes) and memory-bounded for any N.
`device` runs the products (and their selection) there, e.g. on a GPU.

NMI: k-means (faiss, k = number of classes, `nmi_seed`) on the retrieval view — the space the distance
measures — scored with sklearn's arithmetic-mean NMI.
"""
from __future__ import annotations

from typing import Any, Sequence

import faiss
import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

from models.knn import self_knn
from models.retrieval import CHUNK_ELEMENTS, as_tensor, view_of

KMEANS_ITERATIONS = 20  # PML's FaissKMeans setting, so NMI is comparable with PML's


def labels_of(labels: np.ndarray | Tensor, n: int) -> np.ndarray:
    """Labels as int64 (N,), checked against the number of embeddings."""
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, one per embedding; got dtype {y.dtype}, shape {y.shape}")
    return y.astype(np.int64)


def _retrieval_scores(hits: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query scores from a (Q, k) same-class mask ranked closest first and each query's R = class size − 1."""
    k = hits.shape[1]
    scores = {f"recall_at_{K}": hits[:, :K].any(axis=1).astype(np.float64) for K in ks}
    r = np.maximum(relevant, 1)[:, None]
    in_top_r = hits & (np.arange(k)[None, :] < r)
    precision_at_i = np.cumsum(in_top_r, axis=1) / np.arange(1, k + 1)
    scores["precision_at_1"] = hits[:, 0].astype(np.float64)
    scores["map_at_r"] = (precision_at_i * in_top_r).sum(axis=1) / r[:, 0]
    scores["r_precision"] = in_top_r.sum(axis=1) / r[:, 0]
    return scores


def _nmi(vectors: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> float:
    # min_points_per_centroid=1 only silences faiss's "please provide more points" warning; results unchanged.
    kmeans = faiss.Kmeans(vectors.shape[1], n_classes, niter=KMEANS_ITERATIONS, seed=seed,
                          min_points_per_centroid=1)
    kmeans.train(vectors)
    _, clusters = kmeans.index.search(vectors, 1)
    return float(normalized_mutual_info_score(y, clusters[:, 0]))


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def evaluate(embeddings: np.ndarray | Tensor, labels: np.ndarray | Tensor, distance: BaseDistance,
             ks: Sequence[int] = (1, 2, 4, 8), nmi_seed: int = 0,
             device: str | torch.device = "cpu") -> dict[str, Any]:
    """Recall@K, P@1, MAP@R (the headline), R-Precision and NMI of one split, plus the same per class.

    embeddings (N, D), labels (N,) integers; call once per split (held-out classes, train classes). Returns
    JSON-ready values: `None` where a metric is undefined (no class with two members). `per_class` is a
    list of {label, count, recall_at_K…, precision_at_1, map_at_r, r_precision} in label order; NMI, a
    property of the whole partition, has no per-class value. `correct_at_1` (N,) int32, not JSON: 1 where a
    sample's nearest other sample has its class (the map's "wrong@1" colouring, stored by the caller so the
    explorer need not search again); 0 for a class's only member.
    """
    x = as_tensor(embeddings)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 embeddings to evaluate, got {n}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive ranks like (1, 2, 4, 8), got {tuple(ks)}")
    y = labels_of(labels, n)
    classes, class_of, counts = np.unique(y, return_inverse=True, return_counts=True)
    relevant = counts[class_of] - 1
    k = min(n - 1, max(max(ks), int(relevant.max())))

    vectors, metric = view_of(distance, x)
    ids = self_knn(torch.from_numpy(vectors), metric, k, device=device)
    rows = max(1, CHUNK_ELEMENTS // k)
    chunks = [_retrieval_scores(y[ids[s:s + rows]] == y[s:s + rows, None], relevant[s:s + rows], ks)
              for s in range(0, n, rows)]
    scores = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    answerable = relevant > 0
    result: dict[str, Any] = {name: _mean(v[answerable]) for name, v in scores.items()}
    result["nmi"] = _nmi(vectors, y, len(classes), nmi_seed)
    result.update(num_samples=n, num_classes=len(classes), num_queries=int(answerable.sum()), k=k)

    per_class_means = {name: np.bincount(class_of, weights=v, minlength=len(classes)) / counts
                       for name, v in scores.items()}
    per_class = []
    for c, (label, count) in enumerate(zip(classes, counts)):
        record: dict[str, Any] = {"label": int(label), "count": int(count)}
        record.update({name: float(m[c]) if count > 1 else None for name, m in per_class_means.items()})
        per_class.append(record)
    result["per_class"] = per_class
    result["correct_at_1"] = (y[ids[:, 0]] == y).astype(np.int32)
    return result
