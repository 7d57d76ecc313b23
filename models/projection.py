"""2-D and 3-D maps of an embedding (PCA, UMAP) and their alignment to a parent run's map.

Both work on the distance's retrieval view when a distance is given (the space the distance measures: centred
vectors for SNR, L·x for Mahalanobis, the unit sphere for cosine), else on the raw embeddings. UMAP is fed a
k-NN graph computed once under the run's distance (`knn_graph`: models.knn's exact self-k-NN up to
`EXACT_GRAPH_UP_TO` points, umap-learn's NN-descent past it, each with exact values), through umap-learn's
precomputed metric. A fresh map is umap-learn's defaults on that graph (spectral start, its epochs); a map that
starts from a parent run's map (a retrain) takes `N_EPOCHS_FROM_PARENT` epochs at a lower learning rate from
that map as it is — the ≥ 2× of issue 13 at the same 10-NN vote (`knn_vote`). Past `sample_threshold` points
UMAP is fitted on a seeded sample and the rest is placed with `transform` from each point's neighbours in it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from pytorch_metric_learning.distances import BaseDistance
from sklearn.decomposition import PCA
from torch import Tensor

from models.knn import self_knn
from models.retrieval import RetrievalIndex, as_tensor, dissimilarity, exact_values, view_of

# Past it a sample + transform: fast, but class-poor (at 100k in 2 000 classes a 20k sample + transform drew a
# 10-NN vote of 0.16 where the whole fit drew 0.87), so only where a whole fit would take many minutes.
SAMPLE_THRESHOLD = 200_000
EXACT_GRAPH_UP_TO = 20_000  # past it NN-descent: at 100k × 128 the exact graph costs ~36 CPU-s, NN-descent ~9
N_NEIGHBORS = 15  # umap-learn's default
N_EPOCHS_FROM_PARENT = 30  # from a parent run's map: see bench/projection.py and docs/benchmarks.md
PARENT_ALPHA = 0.1  # the learning rate those epochs start at (umap-learn's 1.0 scatters a converged map)
MIN_DIST = 0.1  # umap-learn's default
NEIGHBORS_RANGE = (2, 200)
MIN_DIST_RANGE = (0.0, 0.99)
_UMAP_SCALE = 10.0  # umap-learn scales its own initialisations to this largest |coordinate|


def _euclidean() -> BaseDistance:
    from models.distances import create_distance
    return create_distance("euclidean")


def knn_graph(embeddings: np.ndarray | Tensor, distance: BaseDistance | None = None,
              n_neighbors: int = N_NEIGHBORS, seed: int = 0,
              exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, dists), each (N, min(n_neighbors, N) − 1): every point's nearest *other* points under the
    distance (Euclidean when None), as dissimilarities ≥ 0, closest first — what `project(knn=...)` takes.
    UMAP counts the point itself among its `n_neighbors`, hence the − 1.

    `exact` (default: up to EXACT_GRAPH_UP_TO points) takes models.knn's exact self-k-NN; otherwise the lists come
    from umap-learn's own NN-descent (seeded) on the distance's retrieval view, and only their values are exact.
    """
    distance = distance or _euclidean()
    x = as_tensor(embeddings)
    vectors, metric = view_of(distance, x)
    k = n_neighbors - 1
    if exact if exact is not None else len(x) <= EXACT_GRAPH_UP_TO:
        ids = self_knn(torch.from_numpy(vectors), metric, k)
    else:
        ids = _nn_descent(vectors, k, seed)
    values = dissimilarity(distance, exact_values(distance, x, x, ids))
    order = np.lexsort((ids, values), axis=1)  # the exact values' order, as RetrievalIndex.search gives
    return (np.take_along_axis(ids, order, axis=1),
            np.maximum(np.take_along_axis(values, order, axis=1), 0.0).astype(np.float32))


def _nn_descent(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N, k) approximate nearest other points by L2 on a retrieval view (which ranks as its distance does: the
    cosine view is unit-norm), with umap-learn's NN-descent settings, single-threaded so a seed fixes it."""
    from umap.umap_ import nearest_neighbors

    n = len(vectors)
    found = nearest_neighbors(vectors, k + 1, "euclidean", {}, False, np.random.RandomState(seed), n_jobs=1)[0]
    other = (found != np.arange(n)[:, None]) & (found >= 0)
    if (other.sum(axis=1) < k).any():  # a list NN-descent could not fill: the exact search instead
        return self_knn(torch.from_numpy(vectors), "l2", k)
    first = np.argsort(~other, axis=1, kind="stable")[:, :k]  # each row's first k entries that are not itself
    return np.take_along_axis(found, first, axis=1).astype(np.int64)


@dataclass(frozen=True)
class MapParams:
    """How a map is drawn beyond its method: UMAP's n_neighbors and min_dist, and 2 or 3 dimensions."""
    n_neighbors: int = N_NEIGHBORS
    min_dist: float = MIN_DIST
    dim: int = 2

    def __post_init__(self) -> None:
        check_params(self.n_neighbors, self.min_dist, self.dim)

    def suffix(self, method: str) -> str:
        """What a cached map's file name adds for these parameters: nothing for the default 2-D map (the
        files written before the parameters existed stay valid), only the dimension for PCA (it has no other)."""
        dim = "" if self.dim == 2 else f"_{self.dim}d"
        if method != "umap" or (self.n_neighbors, self.min_dist) == (N_NEIGHBORS, MIN_DIST):
            return dim
        return f"{dim}_nn{self.n_neighbors}_md{self.min_dist:g}"


def check_params(n_neighbors: int, min_dist: float, dim: int) -> None:
    """ValueError naming the parameter when a map's UMAP settings or dimension are out of range."""
    if not NEIGHBORS_RANGE[0] <= n_neighbors <= NEIGHBORS_RANGE[1]:
        raise ValueError(f"n_neighbors must be between {NEIGHBORS_RANGE[0]} and {NEIGHBORS_RANGE[1]}, got {n_neighbors}")
    if not MIN_DIST_RANGE[0] <= min_dist <= MIN_DIST_RANGE[1]:
        raise ValueError(f"min_dist must be between {MIN_DIST_RANGE[0]} and {MIN_DIST_RANGE[1]}, got {min_dist}")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")


def pca_2d(points: np.ndarray, seed: int = 0, dim: int = 2) -> np.ndarray:
    """First `dim` (2 or 3) principal coordinates (N, dim) float32; sklearn's sign convention makes them
    deterministic."""
    n, d = points.shape
    out = np.zeros((n, dim), dtype=np.float32)
    width = min(dim, n - 1, d)
    if width > 0:
        out[:, :width] = PCA(n_components=width, random_state=seed).fit_transform(points)
    return out


def _scaled(xy: np.ndarray) -> np.ndarray:
    largest = np.abs(xy).max()
    return (xy * (_UMAP_SCALE / largest) if largest > 0 else xy).astype(np.float32)


def _self_first(ids: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """umap-learn's k-NN layout: each point is its own first neighbour, at distance 0."""
    n = len(ids)
    return (np.hstack([np.arange(n)[:, None], ids]).astype(np.int64),
            np.hstack([np.zeros((n, 1), np.float32), dists]).astype(np.float32))


def _sparse(ids: np.ndarray, dists: np.ndarray, n_columns: int) -> scipy.sparse.csr_matrix:
    # Built from (data, indices, indptr) so explicit zero distances (duplicates) stay stored entries.
    rows, k = ids.shape
    return scipy.sparse.csr_matrix((dists.ravel(), ids.ravel(), np.arange(0, rows * k + 1, k)),
                                   shape=(rows, n_columns))


def _umap(knn: tuple[np.ndarray, np.ndarray], init: np.ndarray | str, seed: int, min_dist: float, dim: int,
          n_epochs: int | None = None):
    import umap  # lazy: ~20 s import

    ids, dists = _self_first(*knn)
    graph = _sparse(ids[:, 1:], dists[:, 1:], len(ids))
    model = umap.UMAP(n_neighbors=ids.shape[1], metric="precomputed", precomputed_knn=(ids, dists),
                      init=init if isinstance(init, str) else _scaled(init), random_state=seed, n_jobs=1,
                      n_components=dim, min_dist=min_dist, n_epochs=n_epochs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="umap")
        # umap only checks that the matrix is structurally symmetric; the k-NN lists above are what it uses.
        model.fit(graph.maximum(graph.T).tocsr())
    return model


def _fresh_start(knn: tuple[np.ndarray, np.ndarray], points: np.ndarray, seed: int, dim: int) -> np.ndarray | str:
    """umap-learn's spectral start when the k-NN graph is connected, else the PCA map (umap-learn places separate
    components by their data's centroids, which a precomputed graph does not carry). Spectral keeps classes
    apart from the start: at 100k points in 2 000 classes, 200 epochs from PCA reach a 10-NN vote of 0.72, from
    the spectral start 0.87."""
    ids = knn[0]
    pieces = connected_components(_sparse(ids, np.ones(ids.shape, np.float32), len(ids)), connection="weak")[0]
    return "spectral" if pieces == 1 else pca_2d(points, seed, dim)


def _refine(knn: tuple[np.ndarray, np.ndarray], start: np.ndarray, seed: int, min_dist: float, n_epochs: int,
            alpha: float) -> np.ndarray:
    """umap-learn's layout optimisation (seeded, single-threaded) on the k-NN graph, from `start` at its own scale:
    a parent run's map, already at UMAP's scale. umap-learn itself rescales every start into a 10 × 10 box, which
    crams a 100k-point map together and costs the epochs that spread it out again."""
    from umap.umap_ import (find_ab_params, fuzzy_simplicial_set, make_epochs_per_sample,
                            optimize_layout_euclidean)

    ids, dists = _self_first(*knn)
    rng = np.random.RandomState(seed)
    graph = fuzzy_simplicial_set(np.empty((len(ids), 0)), ids.shape[1], rng, "precomputed",
                                 knn_indices=ids, knn_dists=dists)[0].tocoo()
    graph.sum_duplicates()
    graph.data[graph.data < graph.data.max() / n_epochs] = 0.0  # edges too weak to be sampled once, as umap does
    graph.eliminate_zeros()
    a, b = find_ab_params(1.0, min_dist)
    layout = np.array(start, dtype=np.float32, order="C")
    state = rng.randint(np.iinfo(np.int32).min, np.iinfo(np.int32).max, 3).astype(np.int64)
    return optimize_layout_euclidean(layout, layout, graph.row, graph.col, n_epochs, len(ids),
                                     make_epochs_per_sample(graph.data, n_epochs), a, b, state,
                                     initial_alpha=alpha, parallel=False, move_other=True)


def project(embeddings: np.ndarray | Tensor, method: str = "pca", init: np.ndarray | None = None,
            knn: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
            sample_threshold: int = SAMPLE_THRESHOLD, distance: BaseDistance | None = None,
            n_neighbors: int = N_NEIGHBORS, min_dist: float = MIN_DIST, dim: int = 2,
            n_epochs: int | None = None) -> np.ndarray:
    """A map (N, dim) float32 of embeddings (N, D), dim 2 or 3.

    method "pca" (instant) or "umap". For UMAP: `init` (N, dim) is a parent run's map to start from, at its own
    scale (default: umap-learn's spectral start, or the PCA map when the k-NN graph falls apart); `knn` =
    `knn_graph(...)` of these same embeddings if the caller already has it — used when all points are fitted,
    recomputed on the sample past `sample_threshold`; `n_neighbors` and `min_dist` are umap-learn's
    (`check_params` ranges); `n_epochs` None: umap-learn's (500 up to 10k points, 200 above) for a fresh map,
    N_EPOCHS_FROM_PARENT from `init`. Seeded: the same input gives the same map.
    """
    check_params(n_neighbors, min_dist, dim)
    x = as_tensor(embeddings)
    points = view_of(distance, x)[0] if distance is not None else x.numpy()
    n = len(points)
    if method == "pca":
        return pca_2d(points, seed, dim)
    if method != "umap":
        raise ValueError(f"unknown projection method '{method}'; choose 'pca' or 'umap'")
    if init is not None and np.shape(init) != (n, dim):
        raise ValueError(f"init must be one {dim}-D position per point, shape ({n}, {dim}); got {np.shape(init)}")
    init = None if init is None else np.asarray(init, dtype=np.float32)
    if n <= dim + 1:  # UMAP needs a neighbourhood; a handful of points is best shown as is
        return pca_2d(points, seed, dim)
    distance = distance or _euclidean()
    if n <= sample_threshold:
        if knn is not None and len(knn[0]) != n:
            raise ValueError(f"knn must list neighbours of all {n} points (knn_graph of these embeddings), "
                             f"got {len(knn[0])} rows")
        graph = knn if knn is not None else knn_graph(x, distance, min(n_neighbors, n), seed)
        if init is not None:
            return _refine(graph, init, seed, min_dist, n_epochs or N_EPOCHS_FROM_PARENT, PARENT_ALPHA)
        return _umap(graph, _fresh_start(graph, points, seed, dim), seed, min_dist, dim,
                     n_epochs).embedding_.astype(np.float32)

    sample = np.sort(np.random.default_rng(seed).choice(n, size=sample_threshold, replace=False))
    rest = np.setdiff1d(np.arange(n), sample)
    graph = knn_graph(x[sample], distance, min(n_neighbors, sample_threshold), seed)
    start = init[sample] if init is not None else _fresh_start(graph, points[sample], seed, dim)
    model = _umap(graph, start, seed, min_dist, dim, n_epochs)
    ids, values = RetrievalIndex(x[sample], distance).search(x[rest], model.n_neighbors)
    dists = np.maximum(dissimilarity(distance, values), 0.0).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    out[sample] = model.embedding_
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="umap")
        out[rest] = model.transform(_sparse(ids, dists, len(sample)))
    return out


def align(child_xy: np.ndarray, parent_xy: np.ndarray, child_ids: np.ndarray | None = None,
          parent_ids: np.ndarray | None = None) -> np.ndarray:
    """child_xy moved by the similarity transform (rotation or reflection, uniform scale, shift) that best
    maps it onto parent_xy on their shared samples (orthogonal Procrustes), so a child run's map keeps its
    parent's orientation. Rows are matched by `*_ids` (e.g. image indices) when given, else row for row.
    """
    child = np.asarray(child_xy, dtype=np.float64)
    parent = np.asarray(parent_xy, dtype=np.float64)
    if child_ids is None and parent_ids is None:
        if child.shape != parent.shape:
            raise ValueError(f"without ids the maps must match row for row; got {child.shape} and {parent.shape}"
                             " — pass child_ids and parent_ids (e.g. image indices)")
        a, b = child, parent
    else:
        if child_ids is None or parent_ids is None:
            raise ValueError("pass both child_ids and parent_ids, or neither")
        _, ci, pi = np.intersect1d(child_ids, parent_ids, assume_unique=True, return_indices=True)
        a, b = child[ci], parent[pi]
    if len(a) < 3:
        raise ValueError(f"aligning two maps needs at least 3 shared samples, found {len(a)}")
    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - a_mean, b - b_mean
    u, s, vt = np.linalg.svd(a0.T @ b0)
    rotation = u @ vt
    scale = s.sum() / max((a0 ** 2).sum(), np.finfo(float).tiny)
    return ((child - a_mean) @ rotation * scale + b_mean).astype(np.float32)


def knn_vote(points: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """How well a map keeps classes together: the accuracy of a leave-one-out k-NN classifier on `points` (N, d)
    — each point's label predicted by the plurality of its k nearest other points' labels, a tie going to the
    tied label met first (nearest). Exact (a k-d tree: ~1 s at 100k in 2-D, where faiss's brute force takes ~80 s)."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(points)
    k = min(k, n - 1)
    if k < 1:
        raise ValueError(f"a k-NN vote needs at least 2 points, got {n}")
    ids = cKDTree(points).query(points, k + 1)[1]
    own = ids == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)  # the point itself (a duplicate may stand in its place)
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(n), drop] = False
    neighbours = labels[ids[keep].reshape(n, k)]
    votes = (neighbours[:, :, None] == neighbours[:, None, :]).sum(axis=2)  # each neighbour's label's count
    predicted = neighbours[np.arange(n), votes.argmax(axis=1)]  # argmax: the first (nearest) of the tied
    return float((predicted == labels).mean())


def warm_up_umap() -> None:
    """Compile umap-learn's numba kernels (fit on a sample and transform, a fit from a start, NN-descent) on a tiny
    input: ~20–60 s, once per process, so the first real map does not pay it."""
    points = np.random.default_rng(0).standard_normal((120, 8)).astype(np.float32)
    project(points, "umap", init=project(points, "umap", sample_threshold=80))
    knn_graph(points, exact=False)
