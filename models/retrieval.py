"""Nearest neighbours under a run's own distance, with faiss.

faiss knows L2 and inner product only. Every distance supplies a `retrieval_view` on which faiss ranks the
references of a query exactly as the distance does with that query as anchor (SPEC §6), so the search itself
is faiss's; the values of the returned neighbours are then recomputed with `distance.pairwise_distance`
(query first), so they are the run's distances (a similarity for cosine), not faiss's L2 on the view.

Exact flat search by default; past `approximate_threshold` references an IVF index whose `nprobe` is tuned at
build time to reach `target_recall` against exact search for a sample of references held out of the index (and
of k-means) while tuning: out-of-sample queries, as the neighbours endpoint's uploaded images are.
"""
from __future__ import annotations

import itertools
import math

import faiss
import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance
from torch import Tensor

# Past this many references a flat index gets slow for interactive queries (~0.1 s per query batch at 2 cores).
APPROXIMATE_THRESHOLD = 200_000
# Elements (rows × columns) per chunk of work, bounding memory whatever N is (64 MiB of float32).
CHUNK_ELEMENTS = 1 << 24
# Held-out references that tune IVF's nprobe: recall@10 over 512 × 10 neighbours has a standard error ≈ 0.003.
TUNING_QUERIES = 512
# The tuned recall must clear the target by this many standard errors of its estimate: tuned to the target
# exactly, fresh queries would miss it about half of the time.
MARGIN_SE = 2.0
# k-means trains on at most this many references per list (faiss advises 39–256): IVF's default 256 per list
# covers all of 1M points at 4√N lists, minutes of k-means on two cores for centroids that barely move.
TRAIN_PER_LIST = 64

_FAISS_METRIC = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}


def as_tensor(x: np.ndarray | Tensor) -> Tensor:
    """A float32 CPU matrix (N, D); refuses NaN/inf, which would silently scramble every ranking."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if t.ndim != 2:
        raise ValueError(f"embeddings must be a matrix (N, D), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("embeddings contain NaN or inf (did training diverge? lower the learning rate)")
    return t


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters or buffers live (CPU if none): a learnable distance may sit on the GPU it
    trained on, and relative Mahalanobis's whitener is a buffer."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def view_of(distance: BaseDistance, x: Tensor) -> tuple[np.ndarray, str]:
    """`distance.retrieval_view(x)` as a contiguous float32 numpy array for faiss, plus "l2" | "ip"."""
    vectors, metric = distance.retrieval_view(x.to(device_of(distance)))
    return np.ascontiguousarray(vectors.detach().to("cpu", torch.float32).numpy()), metric


def exact_values(distance: BaseDistance, queries: Tensor, refs: Tensor, ids: np.ndarray,
                 device: torch.device | None = None) -> np.ndarray:
    """d(queries[i], refs[ids[i, j]]) (Q, k), query as anchor, chunked so Q·k·D never sits in memory at once.
    Computed on `device` (by default the distance's), which must hold the distance's parameters."""
    q, k = ids.shape
    out = np.empty((q, k), dtype=np.float32)
    rows = max(1, CHUNK_ELEMENTS // max(1, k * refs.shape[1]))
    device = device or device_of(distance)
    with torch.no_grad():
        for s in range(0, q, rows):
            block = torch.as_tensor(ids[s:s + rows]).to(refs.device)
            a = queries[s:s + rows].repeat_interleave(block.shape[1], dim=0)
            values = distance.pairwise_distance(a.to(device), refs[block.reshape(-1)].to(device))
            out[s:s + rows] = values.reshape(block.shape).cpu().numpy()
    return out


def dissimilarity(distance: BaseDistance, values: np.ndarray) -> np.ndarray:
    """Values oriented so that smaller means closer: 1 − similarity for inverted distances (cosine)."""
    return 1.0 - values if distance.is_inverted else values


def drop_self(ids: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
    """Remove each row's own id from a (Q, k+1) result; a row that lacks it loses its last column instead.

    By id, not by position: with duplicate points the self match need not come first (PML does the same).
    """
    own = (ids == self_ids[:, None]) & (self_ids[:, None] >= 0)
    first = own & (np.cumsum(own, axis=1) == 1)
    first[~first.any(axis=1), -1] = True
    return ids[~first].reshape(ids.shape[0], ids.shape[1] - 1)


def recall_per_query(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query, the share of its exact neighbours `truth` (Q, k) that `found` (Q, k) holds: recall@k."""
    return np.array([len(np.intersect1d(a, b)) for a, b in zip(found, truth)]) / truth.shape[1]


def tune_nprobe(index: faiss.IndexIVF, queries: np.ndarray, truth: np.ndarray, target: float) -> int:
    """The smallest nprobe whose recall on `queries` (exact neighbours `truth`, (Q, k)) clears `target` by
    MARGIN_SE standard errors; `index.nlist` when none does. Leaves `index.nprobe` set to it.

    Probing more lists only adds candidates, and a true neighbour among them stays in the top k, so recall
    never falls as nprobe grows: doubling, then bisecting, finds it in about 2·log2(nlist) searches.
    """
    def clears(nprobe: int) -> bool:
        index.nprobe = nprobe
        _, found = index.search(queries, truth.shape[1])
        hits = recall_per_query(found, truth)
        return hits.mean() - MARGIN_SE * hits.std() / math.sqrt(len(hits)) >= target

    low, high = 0, 1  # invariant: `low` fails (0: no lists), `high` clears or is nlist
    while high < index.nlist and not clears(high):
        low, high = high, min(index.nlist, 2 * high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if clears(middle) else (middle, high)
    index.nprobe = high
    return high


class RetrievalIndex:
    """A faiss index over `embeddings` that answers queries under `distance`, exactly (or IVF past a size).

    `distance` is the run's PML distance with `retrieval_view`; asymmetric ones (SNR, relative Mahalanobis)
    always take the query as anchor.
    """

    def __init__(self, embeddings: np.ndarray | Tensor, distance: BaseDistance,
                 approximate_threshold: int | None = APPROXIMATE_THRESHOLD, target_recall: float = 0.95,
                 seed: int = 0):
        self.embeddings = as_tensor(embeddings)
        self.distance = distance
        self.vectors, self.metric = view_of(distance, self.embeddings)
        n, dim = self.vectors.shape
        self.nprobe: int | None = None
        if approximate_threshold is not None and n > approximate_threshold:
            self.index = self._ivf(target_recall, seed)
        else:
            self.index = faiss.IndexFlat(dim, _FAISS_METRIC[self.metric])
            self.index.add(self.vectors)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def approximate(self) -> bool:
        return self.nprobe is not None

    def _ivf(self, target_recall: float, seed: int) -> faiss.Index:
        """IVF-flat with 4√N lists, trained and tuned without the held-out references, which are added last."""
        n, dim = self.vectors.shape
        metric = _FAISS_METRIC[self.metric]
        rng = np.random.default_rng(seed)
        held = np.zeros(n, dtype=bool)
        held[rng.choice(n, size=min(n // 2, TUNING_QUERIES), replace=False)] = True
        kept = np.flatnonzero(~held)
        nlist = max(1, min(int(4 * math.sqrt(n)), len(kept)))
        index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, nlist, metric)
        index.cp.seed = seed
        train = np.sort(rng.choice(kept, size=min(len(kept), TRAIN_PER_LIST * nlist), replace=False))
        index.train(self.vectors[train])
        # Tuned on references inside the index, each query finds itself in the first list it probes, which
        # inflates recall (out-of-sample queries then fell short of the target: 0.93–0.95).
        index.add_with_ids(self.vectors[kept], kept)
        queries = self.vectors[held]
        _, truth = faiss.knn(queries, self.vectors[kept], 10, metric=metric)
        self.nprobe = tune_nprobe(index, queries, kept[truth], target_recall)
        index.add_with_ids(queries, np.flatnonzero(held))
        return index

    def _faiss_search(self, vectors: np.ndarray, k: int) -> np.ndarray:
        _, ids = self.index.search(vectors, k)
        short = (ids < 0).any(axis=1)
        if short.any():  # IVF probed too few lists for these rows: answer them exactly
            _, ids[short] = faiss.knn(vectors[short], self.vectors, k, metric=_FAISS_METRIC[self.metric])
        return ids

    def _width(self, k: int, exclude_self_ids: np.ndarray | None) -> int:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return min(k, len(self) - (exclude_self_ids is not None))

    def neighbours(self, queries: np.ndarray | Tensor, k: int,
                   exclude_self_ids: np.ndarray | None = None) -> np.ndarray:
        """Ids (Q, min(k, available)) of each query's nearest references, closest first, in faiss's order.

        `exclude_self_ids[i]` is the reference id of query i (or −1 when it is not in the index); that id is
        left out of row i. Ties keep faiss's order, as PML's AccuracyCalculator does.
        """
        width = self._width(k, exclude_self_ids)
        if width < 1:
            return np.empty((len(queries), 0), dtype=np.int64)
        vectors, _ = view_of(self.distance, as_tensor(queries))
        if exclude_self_ids is None:
            return self._faiss_search(vectors, width)
        self_ids = np.asarray(exclude_self_ids, dtype=np.int64)
        if self_ids.shape != (len(vectors),):
            raise ValueError(f"exclude_self_ids needs one id per query ({len(vectors)}), got {self_ids.shape}")
        return drop_self(self._faiss_search(vectors, width + 1), self_ids)

    def search(self, queries: np.ndarray | Tensor, k: int,
               exclude_self_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, values), both (Q, min(k, available)): neighbours and their exact distances, closest first.

        Values are `distance.pairwise_distance(query, reference)` — a similarity for cosine (larger = closer);
        rows are ordered by these exact values, then by id: faiss's float32 rounding among near ties is undone
        and exact ties (duplicates) come out in a fixed order.
        """
        q = as_tensor(queries)
        ids = self.neighbours(q, k, exclude_self_ids)
        values = exact_values(self.distance, q, self.embeddings, ids)
        order = np.lexsort((ids, dissimilarity(self.distance, values)), axis=1)
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(values, order, axis=1)
