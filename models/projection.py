"""2-D and 3-D maps of an embedding (PCA, UMAP) and their alignment to a parent run's map.

Both work on the distance's retrieval view when a distance is given (the space the distance measures: centred
vectors for SNR, L·x for Mahalanobis, the unit sphere for cosine), else on the raw embeddings. UMAP is fed a
k-NN graph computed once under the run's distance (`knn_graph`: models.knn's exact self-k-NN, each pair once), through umap-learn's precomputed
metric, so pynndescent never runs; past `sample_threshold` points it is fitted on a seeded sample and the rest
is placed with `transform` from each point's neighbours in the sample. Its default start is the PCA map
(informative, and stable from run to run), or a parent run's map when given.

`import umap` costs ~20 s and its first fit compiles numba: it is imported inside the UMAP path only, and
`warm_up_umap` pays the compilation ahead (the server calls it in the background at start-up).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from pytorch_metric_learning.distances import BaseDistance
from sklearn.decomposition import PCA
from torch import Tensor

from models.knn import self_knn
from models.retrieval import RetrievalIndex, as_tensor, dissimilarity, exact_values, view_of

SAMPLE_THRESHOLD = 20_000  # fitting UMAP on 100k points takes ~40 s warm at 2 cores; 20k + transform ~10 s
N_NEIGHBORS = 15  # umap-learn's default
MIN_DIST = 0.1  # umap-learn's default
NEIGHBORS_RANGE = (2, 200)
MIN_DIST_RANGE = (0.0, 0.99)
_UMAP_SCALE = 10.0  # umap-learn scales its own initialisations to this largest |coordinate|


def _euclidean() -> BaseDistance:
    from models.distances import create_distance
    return create_distance("euclidean")


def knn_graph(embeddings: np.ndarray | Tensor, distance: BaseDistance | None = None,
              n_neighbors: int = N_NEIGHBORS) -> tuple[np.ndarray, np.ndarray]:
    """(ids, dists), each (N, min(n_neighbors, N) − 1): every point's nearest *other* points under the
    distance (Euclidean when None), as dissimilarities ≥ 0, closest first — what `project(knn=...)` takes.
    UMAP counts the point itself among its `n_neighbors`, hence the − 1."""
    distance = distance or _euclidean()
    x = as_tensor(embeddings)
    vectors, metric = view_of(distance, x)
    ids = self_knn(torch.from_numpy(vectors), metric, n_neighbors - 1)
    values = dissimilarity(distance, exact_values(distance, x, x, ids))
    order = np.lexsort((ids, values), axis=1)  # the exact values' order, as RetrievalIndex.search gives
    return (np.take_along_axis(ids, order, axis=1),
            np.maximum(np.take_along_axis(values, order, axis=1), 0.0).astype(np.float32))


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


def _umap(knn: tuple[np.ndarray, np.ndarray], init: np.ndarray, seed: int, min_dist: float = MIN_DIST):
    import umap  # lazy: ~20 s import

    ids, dists = _self_first(*knn)
    graph = _sparse(ids[:, 1:], dists[:, 1:], len(ids))
    model = umap.UMAP(n_neighbors=ids.shape[1], metric="precomputed", precomputed_knn=(ids, dists),
                      init=_scaled(init), random_state=seed, n_jobs=1,
                      n_components=init.shape[1], min_dist=min_dist)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="umap")
        # umap only checks that the matrix is structurally symmetric; the k-NN lists above are what it uses.
        model.fit(graph.maximum(graph.T).tocsr())
    return model


def project(embeddings: np.ndarray | Tensor, method: str = "pca", init: np.ndarray | None = None,
            knn: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
            sample_threshold: int = SAMPLE_THRESHOLD, distance: BaseDistance | None = None,
            n_neighbors: int = N_NEIGHBORS, min_dist: float = MIN_DIST, dim: int = 2) -> np.ndarray:
    """A map (N, dim) float32 of embeddings (N, D), dim 2 or 3.

    method "pca" (instant) or "umap". For UMAP: `init` (N, dim) starts from a parent run's map (default: this
    run's PCA map); `knn` = `knn_graph(...)` of these same embeddings if the caller already has it — used
    when all points are fitted, recomputed on the sample past `sample_threshold`; `n_neighbors` and `min_dist`
    are umap-learn's (`check_params` ranges). Seeded: the same input gives the same map.
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
    if n <= dim + 1:  # UMAP needs a neighbourhood; a handful of points is best shown as is
        return pca_2d(points, seed, dim)
    start = np.asarray(init, dtype=np.float32) if init is not None else pca_2d(points, seed, dim)
    distance = distance or _euclidean()
    if n <= sample_threshold:
        if knn is not None and len(knn[0]) != n:
            raise ValueError(f"knn must list neighbours of all {n} points (knn_graph of these embeddings), "
                             f"got {len(knn[0])} rows")
        graph = knn if knn is not None else knn_graph(x, distance, min(n_neighbors, n))
        return _umap(graph, start, seed, min_dist).embedding_.astype(np.float32)

    sample = np.sort(np.random.default_rng(seed).choice(n, size=sample_threshold, replace=False))
    rest = np.setdiff1d(np.arange(n), sample)
    model = _umap(knn_graph(x[sample], distance, min(n_neighbors, sample_threshold)), start[sample], seed, min_dist)
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


def warm_up_umap() -> None:
    """Compile umap-learn's numba kernels (fit on a sample and transform) on a tiny input: ~20–50 s, once per
    process, so the first real map does not pay it."""
    points = np.random.default_rng(0).standard_normal((120, 8)).astype(np.float32)
    project(points, "umap", sample_threshold=80)
