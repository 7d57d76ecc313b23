"""Wall-clock timing for the benchmarks: warm-up first, then the median of repeats, with the contenders'
calls interleaved so that a noisy neighbour on a shared machine slows them alike and their ratio holds."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def compare(*fns: Callable[[], Any], repeat: int = 5, warmup: int = 1,
            budget_s: float | None = None) -> list[tuple[Any, float]]:
    """For each fn: (its last result, its median wall time in seconds), calls taken in turns (a, b, a, b, ...).

    The warm-up rounds pay one-off costs (imports, numba/JIT compilation, allocator growth, faiss thread pools)
    that a long-running server pays once, not per request. With `budget_s`, warming up and then repeating
    each stop once a phase has spent that long (at least one timed round), so a millisecond step gets the full
    count; a first round that alone exceeds the budget is the measurement (seconds-long calls).
    """
    if repeat < 1 or not fns:
        raise ValueError(f"need at least one function and repeat ≥ 1, got {len(fns)} and {repeat}")

    def round_() -> list[tuple[Any, float]]:
        out = []
        for fn in fns:
            start = time.perf_counter()
            out.append((fn(), time.perf_counter() - start))
        return out

    rounds: list[list[tuple[Any, float]]] = []
    spent = 0.0
    for i in range(warmup):
        warm = round_()
        spent += sum(t for _, t in warm)
        if budget_s is not None and spent > budget_s:
            if i == 0:  # one round is over the budget: one-off costs are noise at this scale, so it counts
                rounds.append(warm)
            break
    spent = sum(t for r in rounds for _, t in r)
    while len(rounds) < repeat and (budget_s is None or not rounds or spent < budget_s):
        rounds.append(round_())
        spent += sum(t for _, t in rounds[-1])
    return [(rounds[-1][i][0], statistics.median(r[i][1] for r in rounds)) for i in range(len(fns))]


def measure(fn: Callable[[], T], repeat: int = 5, warmup: int = 1, budget_s: float | None = None) -> tuple[T, float]:
    """(the last result of `fn()`, its median time): `compare` with one contender. A slow peer that is run
    only once uses `repeat=1, warmup=0`."""
    return compare(fn, repeat=repeat, warmup=warmup, budget_s=budget_s)[0]
