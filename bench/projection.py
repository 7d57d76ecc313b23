"""Projection: time to the first picture (PCA) and to the UMAP map via models.projection vs umap-learn's defaults.

Ours (`project(x, "umap")`, what the product draws): a k-NN graph under the run's distance (exact up to
`EXACT_GRAPH_UP_TO` points, NN-descent past it) fed to umap-learn as a precomputed graph; a fresh map then takes
umap-learn's defaults (spectral start, its epochs), a retrained run's map starts from its parent's map and takes
`N_EPOCHS_FROM_PARENT` epochs; seeded and single-threaded; a sample + transform past `SAMPLE_THRESHOLD`.
Peer: `umap.UMAP(random_state=seed)` with every other setting its default (n_neighbors 15, min_dist 0.1, 200 epochs
above 10k points, pynndescent, spectral start; seeded, so its layout is single-threaded like ours), and the
unseeded `umap.UMAP()` (its layout on every core). Both warm: numba compiled first.
Quality: `knn_vote`, the leave-one-out 10-NN classifier's accuracy on the map's coordinates, for both.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from bench.data import clustered
from bench.report import Section, count, duration, ratio

FULL: dict[str, Any] = {"sizes": (100_000,)}
# A retrained run's embeddings: the parent's moved by noise of this norm (the classes' own spread is 1.5 and their
# centres are ~1.4 apart, bench.data), so the parent's map is a good but not exact start for the child's.
RETRAIN_SHIFT = 0.25


def _umap_learn(x: np.ndarray, seed: int | None = None) -> np.ndarray:
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # seeded: 1 thread, as meant
        return umap.UMAP(random_state=seed).fit_transform(x)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(fn(), wall seconds, CPU seconds of this process: every thread's)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def retrained(x: np.ndarray, seed: int = 1) -> np.ndarray:
    """A child run's embeddings: `x` moved by Gaussian noise of norm ≈ RETRAIN_SHIFT."""
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    return x + noise * np.float32(RETRAIN_SHIFT / np.sqrt(x.shape[1]))


def run(sizes: Sequence[int] = (10_000,), dim: int = 128, class_size: int = 50, seed: int = 0) -> list[Section]:
    from models.distances import create_distance
    from models.projection import N_EPOCHS_FROM_PARENT, SAMPLE_THRESHOLD, knn_vote, project, warm_up_umap

    distance = create_distance("euclidean")
    start = time.perf_counter()
    import umap  # noqa: F401 - timed on its own: every process that draws a UMAP map pays it once

    t_import = time.perf_counter() - start
    start = time.perf_counter()
    warm_up_umap()
    # umap-learn switches from exact k-NN to pynndescent at 4 096 points: warm the path the timed sizes take.
    _umap_learn(clustered(min(max(sizes), 5_000), dim, class_size, seed=1)[0], seed)
    t_warm = time.perf_counter() - start
    section = Section("Projection: PCA and UMAP maps (models.projection) vs umap-learn's defaults",
                      ["N", "map", "dmlscope", "umap-learn", "ratio (wall)", "ratio (CPU)", "10-NN vote dmlscope",
                       "10-NN vote umap-learn", "Δ vote"])
    loads = [os.getloadavg()[0]]
    for n in sizes:
        x, y = clustered(n, dim, class_size)
        how = "fit" if n <= SAMPLE_THRESHOLD else f"fit {count(SAMPLE_THRESHOLD)} + transform"
        pca, t_pca, _ = _timed(lambda: project(x, "pca", distance=distance, seed=seed))
        section.add(count(n), "PCA (first picture)", duration(t_pca), "—", "—", "—", f"{knn_vote(pca, y):.3f}",
                    "—", "—")
        child = retrained(x)
        contenders = {  # in turns, each once: at 100k a peer's fit takes minutes
            "ours": lambda: project(x, "umap", distance=distance, seed=seed),
            "seeded": lambda: _umap_learn(x, seed),
            "ours child": lambda: project(child, "umap", distance=distance, seed=seed, init=maps["ours"][0]),
            "seeded child": lambda: _umap_learn(child, seed),
            "unseeded child": lambda: _umap_learn(child),
        }
        maps: dict[str, tuple[np.ndarray, float, float]] = {}
        for name, fn in contenders.items():
            maps[name] = _timed(fn)
            loads.append(os.getloadavg()[0])

        def row(what: str, ours: str, peer: str) -> None:
            (a, wall_a, cpu_a), (b, wall_b, cpu_b) = maps[ours], maps[peer]
            vote_a, vote_b = knn_vote(a, y), knn_vote(b, y)
            section.add(count(n), what, f"{duration(wall_a)} ({duration(cpu_a)} CPU)",
                        f"{duration(wall_b)} ({duration(cpu_b)} CPU)", ratio(wall_a, wall_b), ratio(cpu_a, cpu_b),
                        f"{vote_a:.4f}", f"{vote_b:.4f}", f"{vote_a - vote_b:+.4f}")

        row(f"UMAP ({how}, fresh: spectral start, umap-learn's epochs) vs umap-learn random_state={seed}",
            "ours", "seeded")
        parent = f"UMAP of a retrained run ({how}, from the parent's map, {N_EPOCHS_FROM_PARENT} epochs)"
        row(f"{parent} vs umap-learn random_state={seed}", "ours child", "seeded child")
        row(f"{parent} vs umap-learn unseeded (parallel)", "ours child", "unseeded child")
    section.notes += [
        f"N run: {', '.join(count(n) for n in sizes)}; synthetic Gaussian classes of {class_size} "
        f"(bench.data.clustered), d = {dim}, Euclidean. Every fit timed once, in turns (wall, and the CPU seconds of "
        f"all the process's threads); load average (1 min) during the runs {min(loads):.1f}–{max(loads):.1f} on "
        f"{os.cpu_count()} cores.",
        f"Retrained run: the same embeddings moved by Gaussian noise of norm {RETRAIN_SHIFT} (the classes' own "
        "spread is 1.5); ours starts from our fresh map of the parent (in the product: the parent run's cached "
        "map, models.maps), the peers fit the child's embeddings afresh.",
        "10-NN vote: accuracy of the leave-one-out 10-NN classifier on the map's coordinates "
        "(models.projection.knn_vote, a plurality vote, ties to the nearest); Δ = ours − umap-learn.",
        f"Paid once per process, not in the table: `import umap` {duration(t_import)}, numba compilation "
        f"(warm_up_umap + a small umap-learn fit) {duration(t_warm)}. The server warms up in the background.",
    ]
    return [section]
