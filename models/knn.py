"""Exact self-k-NN by blocked matrix products: every point's k nearest other points, ranked (score, id).

The search ranks by L2 (or inner product) on a distance's `retrieval_view` (SPEC §6), which is symmetric even for
the asymmetric distances (their per-query denominator does not change a ranking). So each pair's score is computed
once, in one block of a single matrix product over the upper triangle, and offered to both of its points: half the
products of a faiss search of every point against all.

Order is total and reproducible: by the float32 score, then by the smaller id (exact ties, e.g. duplicate images,
keep id order), encoded in one int64 key per candidate — the score's bits made monotone, the id in the low half.

Two selections over the same blocks, chosen by `device`:
- CPU: a threshold scan (numba). Each of torch's threads takes whole block pairs — its own single-threaded
  product, then one pass over the row-major block for both of its sides — and pairs that run at once share no
  point, so no heap needs a lock. A candidate costs work only when it does not exceed its point's current k-th
  score, which after the first block is rare; the pass itself is a float32 minimum per stretch of columns.
- any torch device (CUDA; also runs on the CPU, which is how tests check it): per block, the keys' `topk` merged
  with the current k — more arithmetic, which a GPU has to spare.
Both give the same ids for the same scores.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
import numpy as np
import torch
from torch import Tensor

BLOCK = 2048  # rows (and columns) per product: a 2048² float32 block is 16 MiB, read once right after it is made
_STRETCH = 64  # columns checked by one minimum before any is looked at
_SUB = 16  # ... and, when one is worth a look, per sub-stretch
MARGIN = 8  # extra float32 candidates per row reranked in float64: room for near-ties at the k-th place
_LARGEST = 1e15  # |coordinate| bound: D·(2·1e15)² stays far below float32's 3.4e38, so every score is finite
_EMPTY = np.iinfo(np.int64).max
_LOW = (1 << 32) - 1


def _augmented(vectors: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """(A, B) with A[i]·B[j] = the ranking score of pair (i, j): ‖a−b‖² for "l2" (centred first: translation does
    not change it and small norms lose less to rounding), −⟨a, b⟩ for "ip" (smaller = closer in both)."""
    if metric == "ip":
        return vectors, -vectors
    if metric != "l2":
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    x = vectors - vectors.mean(dim=0, keepdim=True)
    norms = x.pow(2).sum(dim=1, keepdim=True)
    ones = torch.ones_like(norms)
    return torch.cat([x, norms, ones], dim=1), torch.cat([-2 * x, ones, norms], dim=1)


def _keys(scores: Tensor, ids: Tensor) -> Tensor:
    """int64 keys ordered like (score, id): float32 bits made monotone (negatives flipped, −0 as +0) in the high
    half, the id (< 2³¹) in the low half."""
    bits = (scores + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns −0 into +0
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits << 32) | ids


@numba.njit(cache=True, inline="always")
def _monotone(bits: np.int32) -> np.int32:
    """float32 bits → an int32 ordered like the float (−0.0 lands at −1, just below +0.0: see `_key`)."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@numba.njit(cache=True, inline="always")
def _key(m: np.int32, j: int) -> np.int64:
    return (np.int64(0 if m == -1 else m) << 32) | j


@numba.njit(cache=True, inline="always")
def _offer(heaps: np.ndarray, p: int, key: np.int64, bits: np.ndarray, score: np.ndarray) -> np.float32:
    """Offer `key` to point p's max-heap heaps[p] (largest key at 0): it replaces the largest if smaller, and the
    heap is restored. Returns the heap's (new) `_threshold`."""
    k = heaps.shape[1]
    if key < heaps[p, 0]:
        i = 0
        while True:
            child = 2 * i + 1
            if child >= k:
                break
            if child + 1 < k and heaps[p, child + 1] > heaps[p, child]:
                child += 1
            if heaps[p, child] <= key:
                break
            heaps[p, i] = heaps[p, child]
            i = child
        heaps[p, i] = key
    return _threshold(heaps[p, 0], bits, score)


@numba.njit(cache=True, inline="always")
def _threshold(key: np.int64, bits: np.ndarray, score: np.ndarray) -> np.float32:
    """The float32 score of a heap's largest key (+inf while the heap is not full): what a candidate must not
    exceed to be worth a key comparison. `bits` and `score` are one int32 and its float32 view (no bit casts
    between scalars in numba)."""
    if key == _EMPTY:
        return np.float32(np.inf)
    bits[0] = _monotone(np.int32(key >> 32))  # _monotone is its own inverse (the key's 0 for −0.0 is +0.0)
    return score[0]


# No NaN scores (self_knn refuses them), signed zeros alike: the minimum below compiles to plain min instructions,
# measured 2× faster per score than a vectorised count of the scores under the thresholds (numba widens its ints).
_FAST = {"nnan", "nsz", "reassoc", "contract", "arcp"}


@numba.njit(cache=True, fastmath=_FAST)
def _least_margin(scores, i, lo, hi, tau, tcol, both):  # pragma: no cover - compiled
    """min over j in [lo, hi) of scores[i, j] − tau (and of scores[i, j] − tcol[j] when `both`): ≤ 0 exactly
    when some score does not exceed its threshold (a difference of finite floats keeps its sign)."""
    least = np.float32(np.inf)
    if both:
        for j in range(lo, hi):
            least = min(least, min(scores[i, j] - tau, scores[i, j] - tcol[j]))
    else:
        for j in range(lo, hi):
            least = min(least, scores[i, j] - tau)
    return least


@numba.njit(cache=True, nogil=True)
def _scan_block(scores, row0, col0, heaps):  # pragma: no cover - compiled
    """Offer block[i, j] (points row0 + i, col0 + j) to the row point's heap and, off the diagonal, to the column
    point's too; a point never meets itself. One pass over the row-major block serves both sides: each stretch
    of `_STRETCH` scores is compared at once with its row's threshold and its columns' (tcol), and looked at one
    by one only when something does not exceed them — after the first blocks, rarely."""
    bits = scores.view(np.int32)
    both = row0 != col0
    as_int = np.empty(1, np.int32)
    as_float = as_int.view(np.float32)
    tcol = np.empty(scores.shape[1], np.float32)
    for j in range(scores.shape[1]):
        tcol[j] = _threshold(heaps[col0 + j, 0], as_int, as_float)
    for i in range(scores.shape[0]):
        p = row0 + i
        tau = _threshold(heaps[p, 0], as_int, as_float)
        for lo in range(0, scores.shape[1], _STRETCH):
            hi = min(scores.shape[1], lo + _STRETCH)
            if _least_margin(scores, i, lo, hi, tau, tcol, both) > 0:
                continue
            for sub in range(lo, hi, _SUB):
                end = min(hi, sub + _SUB)
                if _least_margin(scores, i, sub, end, tau, tcol, both) > 0:
                    continue
                for j in range(sub, end):
                    q = col0 + j
                    if q == p:
                        continue
                    if scores[i, j] <= tau:
                        tau = _offer(heaps, p, _key(_monotone(bits[i, j]), q), as_int, as_float)
                    if both and scores[i, j] <= tcol[j]:
                        tcol[j] = _offer(heaps, q, _key(_monotone(bits[i, j]), p), as_int, as_float)


def _rounds(blocks: int) -> list[list[tuple[int, int]]]:
    """The block pairs (r ≤ c) in rounds of pairs that share no block: the diagonal first (each point's
    thresholds are tight from its second block on), then a round-robin tournament (circle method; with an odd
    count, a dummy block's partner sits the round out)."""
    m = blocks + blocks % 2
    rounds = [[(r, r) for r in range(blocks)]]
    for t in range(m - 1):
        pairs = [(t, m - 1)] + [((t + s) % (m - 1), (t - s) % (m - 1)) for s in range(1, m // 2)]
        rounds.append([(min(r, c), max(r, c)) for r, c in pairs if max(r, c) < blocks])
    return rounds


def each_block_pair(n: int, block: int, work: Callable[[int, int], None]) -> None:
    """work(r, c) for the first rows r ≤ c of every pair of `block`-row blocks of n points, on torch's threads
    (as many as the caller's), each single-threaded (set_num_threads is per thread: the caller's stays as it
    was), a round of pairs that share no block at a time: what each call writes for its blocks' points needs no
    lock. Torch's and numba's thread pools taking turns instead spin after their parts and fight for the cores."""
    with ThreadPoolExecutor(torch.get_num_threads(), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for pairs in _rounds(-(-n // block)):
            list(pool.map(lambda pair: work(pair[0] * block, pair[1] * block), pairs))


def _self_knn_scan(a: Tensor, b: Tensor, k: int, block: int) -> Tensor:
    heaps = torch.full((a.shape[0], k), _EMPTY, dtype=torch.int64)  # max-heaps: each row's largest key first
    heaps_np = heaps.numpy()

    def work(r: int, c: int) -> None:
        _scan_block((a[r:r + block] @ b[c:c + block].T).numpy(), r, c, heaps_np)

    each_block_pair(a.shape[0], block, work)
    return heaps.sort(dim=1).values


def _self_knn_topk(a: Tensor, b: Tensor, k: int, block: int) -> Tensor:
    n = a.shape[0]
    best = torch.full((n, k), _EMPTY, dtype=torch.int64, device=a.device)
    for r in range(0, n, block):
        for c in range(r, n, block):
            scores = a[r:r + block] @ b[c:c + block].T
            rows = torch.arange(r, r + scores.shape[0], device=a.device)
            cols = torch.arange(c, c + scores.shape[1], device=a.device)
            sides = [(_keys(scores, cols.expand_as(scores)), slice(r, r + block))]
            if c == r:
                sides[0][0].fill_diagonal_(_EMPTY)
            else:
                sides.append((_keys(scores.T, rows.expand(len(cols), -1)), slice(c, c + block)))
            for keys, part in sides:
                merged = torch.cat([best[part], keys], dim=1)
                best[part] = merged.topk(k, dim=1, largest=False, sorted=True).values
    return best


def _scores_of(keys: np.ndarray) -> np.ndarray:
    """The float32 scores in keys' high halves (inverse of `_keys`), as float64."""
    bits = (keys >> 32).astype(np.int32)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits).view(np.float32).astype(np.float64)


@numba.njit(cache=True, parallel=True)
def _exact(x, rows, refs, ip):  # pragma: no cover - compiled
    """float64 scores of x[rows[i]] against x[refs[i, j]]: ‖a−b‖², or −⟨a, b⟩ when `ip`. One fixed loop per pair,
    so identical inputs give identical values (duplicates tie exactly, as they do in exact arithmetic)."""
    out = np.empty(refs.shape)
    for i in numba.prange(refs.shape[0]):
        a = rows[i]
        for j in range(refs.shape[1]):
            b = refs[i, j]
            acc = 0.0
            for t in range(x.shape[1]):
                if ip:
                    acc -= np.float64(x[a, t]) * np.float64(x[b, t])
                else:
                    d = np.float64(x[a, t]) - np.float64(x[b, t])
                    acc += d * d
            out[i, j] = acc
    return out


def _by_score_then_id(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, ids) of each row, ordered by score then id."""
    order = np.lexsort((ids, scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _rerank(x: np.ndarray, keys: np.ndarray, metric: str, k: int, tolerance: np.ndarray) -> np.ndarray:
    """The k best of each row's float32 candidates by float64 score, then id (on the CPU). A row whose last
    candidate's float32 score is within `tolerance` of its k-th exact score may have a tie or a closer point
    outside its candidates: it is searched exactly against every point."""
    n, width = keys.shape
    ids = keys & _LOW
    exact = _exact(x, np.arange(n), ids, metric == "ip")
    kth, out = _by_score_then_id(exact, ids, k)
    if width < n - 1:
        everyone = np.arange(n)[None]
        for row in np.flatnonzero(_scores_of(keys[:, -1]) - tolerance <= kth[:, -1]):
            scores = _exact(x, np.array([row]), everyone, metric == "ip")
            scores[0, row] = np.inf
            out[row] = _by_score_then_id(scores, everyone, k)[1][0]
    return out


def self_knn(vectors: Tensor, metric: str, k: int, device: str | torch.device = "cpu",
             selection: str | None = None, block: int = BLOCK, margin: int = MARGIN) -> np.ndarray:
    """Ids (N, k) of each point's k nearest other points under L2 / inner product ("l2" | "ip") on `vectors`,
    closest first, ties by smaller id — the order of float64 scores, i.e. of a brute-force search. The products
    run in float32 on `device` for k + `margin` candidates, reranked in float64 (see `_rerank`). `selection` is
    "scan" (CPU only) or "topk" (any device), by default "scan" on the CPU and "topk" elsewhere."""
    n = vectors.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and N − 1 = {n - 1}, got {k}")
    if n >= 1 << 31:
        raise ValueError(f"at most 2³¹ points fit the ranking keys, got {n}")
    if not bool(torch.isfinite(vectors).all()) or float(vectors.abs().max()) >= _LARGEST:
        raise ValueError(f"vectors must be finite and below {_LARGEST:g} in size (float32 scores must not overflow)")
    device = torch.device(device)
    x = vectors.to(device, torch.float32)
    width = min(n - 1, k + margin)
    with torch.no_grad():
        a, b = _augmented(x, metric)
        if (selection or ("scan" if device.type == "cpu" else "topk")) == "scan":
            keys = _self_knn_scan(a.contiguous(), b.contiguous(), width, block)
        else:
            keys = _self_knn_topk(a, b, width, block)
        keys = keys.cpu().numpy()
    view = np.ascontiguousarray(x.cpu().numpy())
    return _rerank(view, keys, metric, k, _tolerance(x, metric).cpu().numpy())


def _tolerance(x: Tensor, metric: str) -> Tensor:
    """Per row i, how far a float32 score of a pair (i, j) can plausibly be from its exact value: 8 standard
    deviations of a random walk of D + 2 roundings (u = 2⁻²⁴) on the largest products the row can meet
    (Cauchy–Schwarz). A worst-case bound (D·u, not √D·u) would send most rows of a dense set to the exact
    fallback while real BLAS errors stay far below it."""
    spread = 8 * (x.shape[1] + 2) ** 0.5 * 2.0 ** -24
    x = x.double() if metric == "ip" else x.double() - x.double().mean(dim=0)
    norms = torch.linalg.vector_norm(x, dim=1)
    top = norms.max()
    return spread * (norms * top if metric == "ip" else (norms + top) ** 2 + norms ** 2 + top ** 2)
