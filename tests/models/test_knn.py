"""self_knn (blocked products, each pair once, float64 rerank) and evaluate() on it, against brute force in
float64 with ties broken by the smaller id — on random data, on integer data (exact ties) and on duplicates, for
every distance a run can have, through both selections (the CPU scan and the device path's topk, run here on
the CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.distances import create_distance, list_distances
from models.evaluate import evaluate
from models.knn import _rounds, self_knn
from models.retrieval import view_of


def brute_ids(view: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Each row's k nearest others by float64 score (elementwise, so duplicates tie exactly), then id."""
    x = view.astype(np.float64)
    scores = ((x[:, None] - x[None]) ** 2).sum(-1) if metric == "l2" else -(x[:, None] * x[None]).sum(-1)
    np.fill_diagonal(scores, np.inf)
    return np.stack([np.lexsort((np.arange(len(x)), row))[:k] for row in scores])


def dataset(kind: str, n: int = 300, dim: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, dim)).astype(np.float32)
    if kind == "integer":  # few distinct values: most distances tie exactly
        return rng.integers(-2, 3, (n, dim)).astype(np.float32)
    base = rng.standard_normal((n // 3, dim)).astype(np.float32)  # "duplicates": every point three times
    return np.concatenate([base, base[rng.permutation(len(base))], base[::-1]])


@pytest.mark.parametrize("kind", ["random", "integer", "duplicates"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("selection", ["scan", "topk"])
def test_equals_brute_force_with_and_without_ties(kind: str, metric: str, selection: str) -> None:
    x = dataset(kind)
    expected = brute_ids(x, metric, 12)
    # block 64 < n: diagonal, off-diagonal and ragged last blocks, both sides of every pair
    got = self_knn(torch.from_numpy(x), metric, 12, selection=selection, block=64)
    np.testing.assert_array_equal(got, expected)


def test_ties_straddling_the_margin_are_searched_exactly() -> None:
    """Groups of 20 identical points with k = 5 and no margin: every row's candidates end inside a tie, which
    only the exact fallback resolves in id order."""
    rng = np.random.default_rng(3)
    x = np.repeat(rng.standard_normal((15, 4)).astype(np.float32), 20, axis=0)[rng.permutation(300)]
    np.testing.assert_array_equal(self_knn(torch.from_numpy(x), "l2", 25, margin=0, block=64),
                                  brute_ids(x, "l2", 25))


def test_k_up_to_n_minus_one_and_bad_k() -> None:
    x = dataset("random", n=40)
    np.testing.assert_array_equal(self_knn(torch.from_numpy(x), "l2", 39, block=16), brute_ids(x, "l2", 39))
    for k in (0, 40):
        with pytest.raises(ValueError, match="k must be"):
            self_knn(torch.from_numpy(x), "l2", k)


@pytest.mark.parametrize("blocks", range(1, 10))
def test_rounds_cover_every_block_pair_once_and_share_no_block_within_a_round(blocks: int) -> None:
    """The scan's threads take a round's pairs at once: two pairs sharing a block would race on its heaps."""
    rounds = _rounds(blocks)
    pairs = [pair for round_ in rounds for pair in round_]
    assert sorted(pairs) == [(r, c) for r in range(blocks) for c in range(r, blocks)]
    for round_ in rounds:
        used = [block for pair in round_ for block in set(pair)]
        assert len(used) == len(set(used)), round_


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e16])
def test_non_finite_or_huge_vectors_are_refused(bad: float) -> None:
    x = dataset("random", n=40)
    x[7, 2] = bad
    with pytest.raises(ValueError, match="finite"):
        self_knn(torch.from_numpy(x), "l2", 5)


def _distance(name: str, x: np.ndarray):
    distance = create_distance(name, dim=x.shape[1])
    if name == "relative_mahalanobis":
        distance.refresh(torch.from_numpy(x[:150]))  # a whitening that is not the identity
    return distance


def _metrics_by_brute_force(order: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MAP@R, R-Precision, Recall@1/2/4/8 from each row's full ranking (self excluded), lone queries left out."""
    out: dict[str, list[float]] = {"map_at_r": [], "r_precision": [], **{f"recall_at_{k}": [] for k in (1, 2, 4, 8)}}
    for i, ranked in enumerate(order):
        r = int((y == y[i]).sum()) - 1
        if r == 0:
            continue
        same = y[ranked] == y[i]
        hits = np.cumsum(same[:r])
        out["map_at_r"].append(float((hits / np.arange(1, r + 1) * same[:r]).sum() / r))
        out["r_precision"].append(hits[-1] / r)
        for k in (1, 2, 4, 8):
            out[f"recall_at_{k}"].append(float(same[:k].any()))
    return {name: float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("name", list_distances())
def test_evaluate_equals_the_distance_own_ranking_for_every_distance(name: str) -> None:
    """Random data: the ranking of the distance's own float64 matrix (query as anchor), ties by id."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 12, 400)
    x = (rng.standard_normal((400, 8)) + 1.5 * rng.standard_normal((12, 8))[y]).astype(np.float32)
    distance = _distance(name, x)
    ours = evaluate(x, y, distance)
    with torch.no_grad():
        matrix = distance.double()(torch.from_numpy(x).double()).numpy()
    matrix = -matrix if distance.is_inverted else matrix
    np.fill_diagonal(matrix, np.inf)
    order = np.stack([np.lexsort((np.arange(len(y)), row))[:-1] for row in matrix])
    for metric, value in _metrics_by_brute_force(order, y).items():
        assert ours[metric] == pytest.approx(value, abs=1e-12), metric
    assert np.array_equal(ours["correct_at_1"], y[order[:, 0]] == y)  # per sample: the map's wrong@1 colouring


@pytest.mark.parametrize("name", list_distances())
def test_evaluate_with_ties_equals_brute_force_on_the_view(name: str) -> None:
    """Integer embeddings: many exact ties, broken by id in the view's float64 order."""
    rng = np.random.default_rng(5)
    x = rng.integers(-1, 3, (300, 5)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    distance = _distance(name, x)
    view, metric = view_of(distance, torch.from_numpy(x))
    order = brute_ids(view, metric, 299)
    ours = evaluate(x, y, distance)
    for key, value in _metrics_by_brute_force(order, y).items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_the_gpu_equals_the_cpu() -> None:
    x = dataset("random", n=2000, dim=16)
    y = np.random.default_rng(6).integers(0, 40, 2000)
    distance = create_distance("euclidean")
    gpu, cpu = evaluate(x, y, distance, device="cuda"), evaluate(x, y, distance)
    assert np.array_equal(gpu.pop("correct_at_1"), cpu.pop("correct_at_1"))
    assert {k: v for k, v in gpu.items() if k != "nmi"} == {k: v for k, v in cpu.items() if k != "nmi"}
