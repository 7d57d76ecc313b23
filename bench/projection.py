"""Projection: time to the first picture (PCA) and to the UMAP map via models.projection vs umap-learn defaults.

Ours: faiss exact k-NN under the run's distance fed to umap-learn as a precomputed graph, PCA start, seeded
single-threaded layout, a 20k sample + transform past `SAMPLE_THRESHOLD`. Peer: `umap.UMAP().fit_transform(x)`
(pynndescent k-NN, spectral start, unseeded so its layout runs on every core). Both warm: numba compiled first.
Quality: the share of points whose 10 nearest neighbours in the 2-D map mostly share their class (10-NN vote).
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import faiss
import numpy as np

from bench.data import clustered
from bench.report import Section, count, duration, ratio
from bench.timing import compare, measure

FULL: dict[str, Any] = {"sizes": (10_000, 100_000)}


def knn_vote(points: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out k-NN majority-vote accuracy of `labels` in `points` (exact faiss): how well a map keeps classes."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    _, ids = faiss.knn(points, points, k + 1)
    neighbours = labels[ids[:, 1:]]
    votes = (neighbours == labels[:, None]).sum(axis=1)
    return float((votes > k // 2).mean())


def _umap_learn(x: np.ndarray, seed: int | None = None) -> np.ndarray:
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # seeded: 1 thread, as meant
        return umap.UMAP(random_state=seed).fit_transform(x)


def run(sizes: Sequence[int] = (10_000,), dim: int = 128, class_size: int = 50, repeat: int = 2) -> list[Section]:
    from models.distances import create_distance
    from models.projection import SAMPLE_THRESHOLD, project, warm_up_umap

    distance = create_distance("euclidean")
    start = time.perf_counter()
    import umap  # noqa: F401 - timed on its own: every process that draws a UMAP map pays it once

    t_import = time.perf_counter() - start
    start = time.perf_counter()
    warm_up_umap()
    # umap-learn switches from exact k-NN to pynndescent at 4 096 points: warm the path the timed sizes take.
    _umap_learn(clustered(min(max(sizes), 5_000), dim, class_size, seed=1)[0])
    t_warm = time.perf_counter() - start
    section = Section("Projection: PCA and UMAP maps (models.projection) vs umap-learn",
                      ["N", "map", "dmlscope", "umap-learn", "ratio", "10-NN vote dmlscope", "10-NN vote umap-learn"])
    for n in sizes:
        x, y = clustered(n, dim, class_size)
        pca, t_pca = measure(lambda: project(x, "pca", distance=distance), repeat=3)
        section.add(count(n), "PCA (first picture)", duration(t_pca), "—", "—", f"{knn_vote(pca, y):.3f}", "—")
        (ours, t_ours), (peer, t_peer), (seeded, t_seeded) = compare(
            lambda: project(x, "umap", distance=distance), lambda: _umap_learn(x), lambda: _umap_learn(x, seed=0),
            repeat=repeat, warmup=0)
        how = "fit" if n <= SAMPLE_THRESHOLD else f"fit {count(SAMPLE_THRESHOLD)} + transform"
        vote = f"{knn_vote(ours, y):.3f}"
        section.add(count(n), f"UMAP ({how}) vs umap-learn defaults", duration(t_ours), duration(t_peer),
                    ratio(t_ours, t_peer), vote, f"{knn_vote(peer, y):.3f}")
        section.add(count(n), f"UMAP ({how}) vs umap-learn random_state=0", duration(t_ours), duration(t_seeded),
                    ratio(t_ours, t_seeded), vote, f"{knn_vote(seeded, y):.3f}")
    section.notes += [
        f"N run: {', '.join(count(n) for n in sizes)}; synthetic Gaussian classes of {class_size}, d = {dim}; "
        f"10-NN vote in the full {dim}-d space at the largest N: {knn_vote(x, y):.3f}. UMAP: median of {repeat} "
        "rounds, the three fits in turns; PCA: median of 3.",
        f"Paid once per process, not in the table: `import umap` {duration(t_import)}, numba compilation "
        f"(warm_up_umap + a small umap-learn fit) {duration(t_warm)}. The server warms up in the background.",
        "Our layout is seeded (the same embeddings give the same map, run after run), which makes umap-learn's "
        "layout single-threaded; its defaults (unseeded) use every core, so the seeded row is like for like.",
    ]
    return [section]
