"""Wall-clock timing for the benchmarks: warm-up first, then the median of repeats (robust to a noisy neighbour)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def measure(fn: Callable[[], T], repeat: int = 5, warmup: int = 1) -> tuple[T, float]:
    """(the last result of `fn()`, median wall time in seconds over `repeat` calls after `warmup` untimed calls).

    The warm-up pays one-off costs (imports, numba/JIT compilation, allocator growth, faiss thread pools) that a
    long-running server pays once, not per request. A slow peer is run with `repeat=1, warmup=0`.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)
