"""Query → gallery Recall@K: In-Shop's published protocol (SPEC §4), next to the all-against-all test metrics.

In-Shop splits its test images into queries and a gallery; each query is searched in the gallery only (never
among the other queries, and itself is not in the gallery), and Recall@K is the fraction of queries whose K
nearest gallery images hold one of the same item. K ∈ {1, 10, 20, 30, 40, 50}.

A query's rank is the number of gallery images strictly closer than its closest same-item gallery image, so
Recall@K = mean(rank < K): exact at any K, with no k-NN list to truncate, and equal to a top-K search whenever
distances do not tie (ties count in the query's favour). Distances are the run's own (the query as anchor, as
for the asymmetric SNR), computed in blocks so memory stays bounded. Queries whose item has no gallery image
cannot be answered and are left out (counted in `unanswerable`), as evaluate.py leaves out lone queries.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance

from models.retrieval import CHUNK_ELEMENTS

IN_SHOP_KS = (1, 10, 20, 30, 40, 50)
QUERY, GALLERY = "query", "gallery"


def query_ranks(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                distance: BaseDistance, device: str | torch.device = "cpu") -> np.ndarray:
    """int64 (Q,): per query, the gallery images strictly closer than its closest same-label one; -1 when its
    label has no gallery image. Blocks are computed on `device`, which must hold the distance's parameters."""
    g = torch.as_tensor(np.asarray(gallery, dtype=np.float32)).to(device)
    g_labels = torch.as_tensor(np.asarray(gallery_labels, dtype=np.int64)).to(device)
    q_all = np.asarray(query, dtype=np.float32)
    q_labels_all = np.asarray(query_labels, dtype=np.int64)
    block = max(1, CHUNK_ELEMENTS // max(1, len(g)))
    ranks = np.empty(len(q_all), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(q_all), block):
            mat = distance(torch.as_tensor(q_all[s:s + block]).to(device), g).float()
            closeness = mat if distance.is_inverted else -mat  # larger = closer, whatever the distance
            same = torch.as_tensor(q_labels_all[s:s + block]).to(device)[:, None] == g_labels[None, :]
            best = torch.where(same, closeness, -torch.inf).max(dim=1).values
            rank = (closeness > best[:, None]).sum(dim=1)
            ranks[s:s + block] = torch.where(same.any(dim=1), rank, -1).cpu().numpy()
    return ranks


def query_gallery_recall(embeddings: np.ndarray, labels: np.ndarray, partition: np.ndarray, distance: BaseDistance,
                         ks: Sequence[int] = IN_SHOP_KS,
                         device: str | torch.device = "cpu") -> dict[str, float | int | None]:
    """Recall@K of the `partition == "query"` rows searched among the `"gallery"` rows (other rows ignored), with
    the counts of answered and unanswerable queries and of gallery images."""
    partition = np.asarray(partition)
    is_query, is_gallery = partition == QUERY, partition == GALLERY
    if not is_query.any() or not is_gallery.any():
        raise ValueError(f"query → gallery retrieval needs both query and gallery images; got {int(is_query.sum())} "
                         f"queries and {int(is_gallery.sum())} gallery images")
    labels = np.asarray(labels)
    ranks = query_ranks(embeddings[is_query], labels[is_query], embeddings[is_gallery], labels[is_gallery], distance,
                        device)
    answered = ranks[ranks >= 0]
    out: dict[str, float | int | None] = {f"recall_at_{k}": float(np.mean(answered < k)) if len(answered) else None
                                          for k in ks}
    return {**out, "queries": int(len(answered)), "unanswerable": int((ranks < 0).sum()),
            "gallery": int(is_gallery.sum())}


def split_query_gallery(partition: np.ndarray | None, embeddings: np.ndarray, labels: np.ndarray,
                        distance: BaseDistance,
                        device: str | torch.device = "cpu") -> dict[str, float | int | None] | None:
    """query_gallery_recall for a split whose images carry an evaluation partition with both queries and a gallery
    (In-Shop's test side); None otherwise (other sets, In-Shop's training classes, a validation split)."""
    if partition is None or not ((partition == QUERY).any() and (partition == GALLERY).any()):
        return None
    return query_gallery_recall(embeddings, labels, partition, distance, device=device)
