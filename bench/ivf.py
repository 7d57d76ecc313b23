"""IVF at scale: models.retrieval's tuned IVF index vs its exact flat index (faiss.IndexFlat) on fresh queries.

Issue 13's bar: at 1M × 128, ≥ 10× faster than flat with out-of-sample recall@10 ≥ 0.95. The queries here were
neither indexed nor used to tune nprobe (RetrievalIndex tunes on references it holds out of the index), and
recall is measured against the flat index's exact answers to the same queries. Both indexes are searched through
RetrievalIndex.neighbours: a batch at a time (as evaluation, compare and UMAP call it) and one query at a time
(as the neighbours endpoint does). `python -m bench.ivf --full` runs 1M.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from bench.data import SPREAD, clustered
from bench.report import Section, count, duration, ratio
from bench.retrieval import K, recall

T = TypeVar("T")
FULL: dict[str, Any] = {"n": 1_000_000}
SINGLE = 20  # queries timed one at a time (median): the flat one scans every reference each time


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, CPU seconds of this process: all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _single(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> float:
    """Median wall seconds of a one-query search over `queries` (the first call warms up)."""
    search(queries[:1])
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(n: int = 100_000, dim: int = 128, queries: int = 1_000, spreads: Sequence[float] = (SPREAD, 1.0),
        distances: Sequence[str] = ("euclidean", "cosine"), target_recall: float = 0.95,
        progress: bool = False) -> list[Section]:
    """Build flat and IVF per spread and distance; time a batch of `queries` fresh queries and single ones.
    With `progress`, each pair of rows is printed when done (a 1M run takes many minutes)."""
    from models.distances import create_distance
    from models.retrieval import MARGIN_SE, TRAIN_PER_LIST, TUNING_QUERIES, RetrievalIndex

    section = Section(
        f"IVF at scale: tuned IVF vs exact flat (models.retrieval), {count(n)} × {dim}, {count(queries)} "
        f"out-of-sample queries, k = {K}",
        ["spread", "distance", "mates in top 10", "index", "build", "build CPU", "batch search", "search CPU",
         "vs flat", "per query", "vs flat (one)", f"recall@{K}", "setting"])
    load = [os.getloadavg()]
    for spread in spreads:
        x, labels = clustered(n + queries, dim, spread=spread)
        refs, fresh = x[:n], x[n:]
        for name in distances:
            distance = create_distance(name)
            flat, flat_build, flat_build_cpu = _timed(lambda: RetrievalIndex(refs, distance,
                                                                             approximate_threshold=None))
            ivf, ivf_build, ivf_build_cpu = _timed(lambda: RetrievalIndex(refs, distance, approximate_threshold=0,
                                                                          target_recall=target_recall))
            truth, flat_search, flat_search_cpu = _timed(lambda: flat.neighbours(fresh, K))
            found, ivf_search, ivf_search_cpu = _timed(lambda: ivf.neighbours(fresh, K))
            flat_one = _single(lambda v: flat.neighbours(v, K), fresh[:SINGLE])
            ivf_one = _single(lambda v: ivf.neighbours(v, K), fresh[:SINGLE])
            mates = f"{np.mean(labels[:n][truth] == labels[n:, None]):.2f}"
            head = [f"{spread:g}", name, mates]
            section.add(*head, "flat (exact)", duration(flat_build), duration(flat_build_cpu),
                        duration(flat_search), duration(flat_search_cpu), "1.00×", duration(flat_one), "1.00×",
                        "1.000", "faiss.IndexFlat")
            section.add(*head, "IVF-flat (ours)", duration(ivf_build), duration(ivf_build_cpu),
                        duration(ivf_search), duration(ivf_search_cpu), ratio(ivf_search, flat_search),
                        duration(ivf_one), ratio(ivf_one, flat_one), f"{recall(found, truth):.3f}",
                        f"nlist {ivf.index.nlist}, nprobe {ivf.nprobe}")
            del flat, ivf
            load.append(os.getloadavg())
            if progress:
                print(*(" | ".join(row) for row in section.rows[-2:]), f"load {load[-1]}", sep="\n", flush=True)
    section.notes += [
        f"Data: bench.data.clustered, Gaussian classes of 50 points whose centres are ≈ √2 apart, noise of norm "
        f"`spread` ({SPREAD:g} is the benchmarks' default; 1.0 is tighter classes). 'mates in top 10' is the share "
        "of each query's exact 10 neighbours in its own class: how much class structure the data has at this N.",
        f"Build: RetrievalIndex construction; for IVF k-means on ≤ {TRAIN_PER_LIST} references per list, then "
        f"nprobe tuned to recall@{K} − {MARGIN_SE:g} standard errors ≥ {target_recall} on {TUNING_QUERIES} "
        "references held out of the index and of k-means. The queries timed here are other points, never indexed "
        "nor used to tune.",
        f"Batch search: all {count(queries)} queries in one call, timed once; CPU = process CPU seconds (faiss "
        f"uses every core). Per query: median of {SINGLE} single-query calls. 'vs flat' is ours ÷ flat: ≤ 0.10× "
        "is ≥ 10× faster.",
        "Load average (1, 5, 15 min) at the start and after each distance: "
        + "; ".join(f"{a:.1f}, {b:.1f}, {c:.1f}" for a, b, c in load) + f" (on {os.cpu_count()} cores).",
    ]
    return [section]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ivf", description=__doc__)
    parser.add_argument("--full", action="store_true", help="1M references (minutes, ~6 GB of memory)")
    args = parser.parse_args()
    for s in run(**(FULL if args.full else {}), progress=True):
        print(s.markdown())
