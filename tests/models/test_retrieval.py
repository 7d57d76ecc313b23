"""RetrievalIndex against brute-force sorting of the slow reference distance, for every registered distance."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from models.distances import create_distance, list_distances
import faiss

import models.retrieval
from models.retrieval import MARGIN_SE, RetrievalIndex, tune_nprobe
from tests.support.reference import distance_matrix, pair_distance

DIM = 6


def make(name: str):
    """The distance with a random (fixed) L for the Mahalanobis ones, so they are not secretly Euclidean."""
    d = create_distance(name, dim=DIM)
    if hasattr(d, "L"):
        with torch.no_grad():
            d.L.copy_(torch.eye(DIM) + 0.5 * torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(1)))
    return d


def brute_force(name: str, d, q: torch.Tensor, r: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every reference sorted for every query by the slow loop's values, query as anchor."""
    m = distance_matrix(pair_distance(name, copy.deepcopy(d).double()), q.double(), r.double()).numpy()
    order = np.argsort(-m if d.is_inverted else m, axis=1, kind="stable")
    return order, np.take_along_axis(m, order, axis=1)


@pytest.mark.parametrize("name", list_distances())
def test_search_equals_brute_force_sorting(name: str) -> None:
    d = make(name)
    refs, queries = torch.randn(40, DIM), torch.randn(7, DIM)
    ids, values = RetrievalIndex(refs.numpy(), d).search(queries, 10)
    want_ids, want_values = brute_force(name, d, queries, refs)
    np.testing.assert_array_equal(ids, want_ids[:, :10])
    np.testing.assert_allclose(values, want_values[:, :10], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["euclidean", "snr", "relative_mahalanobis"])
def test_self_exclusion_drops_the_query_not_its_duplicate(name: str) -> None:
    d = make(name)
    x = torch.randn(30, DIM)
    x[6] = x[5]  # a duplicate: at distance 0, it may come before the query itself in faiss's order
    ids, values = RetrievalIndex(x, d).search(x, 5, exclude_self_ids=np.arange(30))
    assert ids.shape == (30, 5)
    assert not (ids == np.arange(30)[:, None]).any()
    assert ids[5, 0] == 6 and ids[6, 0] == 5 and values[5, 0] == pytest.approx(0.0, abs=1e-6)
    want_ids, _ = brute_force(name, d, x, x)
    mask = want_ids != np.arange(30)[:, None]
    expected = want_ids[mask].reshape(30, 29)[:, :5]
    rows = np.setdiff1d(np.arange(30), [5, 6])  # rows 5, 6 tie at 0 with themselves in the brute force
    # The duplicates are interchangeable: their float32 values may differ by an ulp and swap them.
    np.testing.assert_array_equal(np.where(ids == 6, 5, ids)[rows], np.where(expected == 6, 5, expected)[rows])


def test_k_larger_than_the_index_returns_every_reference() -> None:
    d = make("cosine")
    refs = torch.randn(12, DIM)
    ids, values = RetrievalIndex(refs, d).search(refs[:3], 50)
    assert ids.shape == values.shape == (3, 12)
    assert all(sorted(row) == list(range(12)) for row in ids)
    assert (np.diff(values, axis=1) <= 1e-6).all()  # a similarity: closest (largest) first
    ids, _ = RetrievalIndex(refs, d).search(refs[:3], 50, exclude_self_ids=np.array([0, 1, -1]))
    assert ids.shape == (3, 11)
    assert 0 not in ids[0] and 1 not in ids[1]


def test_approximate_index_past_the_threshold_keeps_exact_values() -> None:
    rng = np.random.default_rng(0)
    centres = 4 * rng.standard_normal((20, 16))
    x = (centres[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 16))).astype(np.float32)
    d = make("euclidean")
    approx = RetrievalIndex(x, d, approximate_threshold=1000)
    exact = RetrievalIndex(x, d, approximate_threshold=None)
    assert approx.approximate and approx.nprobe >= 1 and not exact.approximate
    ids, values = approx.search(x[:200], 10)
    true_ids, _ = exact.search(x[:200], 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ids, true_ids)])
    assert recall >= 0.9
    recomputed = np.linalg.norm(x[:200, None, :] - x[ids], axis=2)
    np.testing.assert_allclose(values, recomputed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["euclidean", "cosine"])
def test_ivf_nprobe_reaches_the_target_recall_on_queries_outside_the_index(name: str) -> None:
    """nprobe is tuned on references held out of the index, so fresh queries (never indexed) reach the target;
    tuned on indexed references, each finds itself first and the recall it sees is inflated."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((60, 24)) / np.sqrt(24)
    y = rng.integers(0, 60, 12_000)
    x = (centres[y] + 1.5 * rng.standard_normal((12_000, 24)) / np.sqrt(24)).astype(np.float32)
    refs, queries = x[:10_000], x[10_000:]
    d = make(name)
    approx = RetrievalIndex(refs, d, approximate_threshold=0, target_recall=0.95)
    found = approx.neighbours(queries, 10)
    truth = RetrievalIndex(refs, d, approximate_threshold=None).neighbours(queries, 10)
    assert 1 < approx.nprobe < approx.index.nlist  # a real trade-off, not a trivial full scan
    assert np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found, truth)]) >= 0.95
    assert approx.index.ntotal == len(refs)  # the held-out references are in the index afterwards
    np.testing.assert_array_equal(approx.neighbours(refs[:50], 1)[:, 0], np.arange(50))


def test_bad_inputs_say_what_to_fix() -> None:
    d = make("euclidean")
    x = torch.randn(5, DIM)
    with pytest.raises(ValueError, match="k must be at least 1"):
        RetrievalIndex(x, d).search(x, 0)
    x[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        RetrievalIndex(x, d)
    with pytest.raises(ValueError, match="one id per query"):
        RetrievalIndex(torch.randn(5, DIM), d).search(torch.randn(3, DIM), 2, exclude_self_ids=np.arange(5))


def _ivf_case(nlist: int = 32) -> tuple[faiss.IndexIVFFlat, np.ndarray, np.ndarray]:
    """An IVF index over 4 000 noisy class points and 200 fresh queries with their exact 10 neighbours."""
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((40, 16)) / 4
    x = (centres[rng.integers(0, 40, 4_200)] + rng.standard_normal((4_200, 16)) / 4).astype(np.float32)
    refs, queries = x[:4_000], x[4_000:]
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(16), 16, nlist)
    index.train(refs)
    index.add(refs)
    return index, queries, faiss.knn(queries, refs, 10)[1]


def _lower_bound(index: faiss.IndexIVFFlat, nprobe: int, queries: np.ndarray, truth: np.ndarray) -> float:
    """Recall@10 at `nprobe` minus MARGIN_SE standard errors, by sets (the slow reference)."""
    index.nprobe = nprobe
    found = index.search(queries, 10)[1]
    hits = np.array([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(found, truth)])
    return hits.mean() - MARGIN_SE * math.sqrt(((hits - hits.mean()) ** 2).mean() / len(hits))


@pytest.mark.parametrize("target", [0.8, 0.9, 0.97])
def test_tune_nprobe_is_the_smallest_that_clears_the_target_with_its_margin(target: float) -> None:
    index, queries, truth = _ivf_case()
    bounds = [_lower_bound(index, p, queries, truth) for p in range(1, index.nlist + 1)]
    assert all(a <= b + 1e-12 for a, b in zip(bounds, bounds[1:]))  # the monotonicity bisection relies on
    expected = next(p for p, bound in enumerate(bounds, start=1) if bound >= target)
    assert 1 < expected < index.nlist  # a real choice at every target
    assert tune_nprobe(index, queries, truth, target) == expected == index.nprobe


def test_tune_nprobe_probes_every_list_when_the_target_is_out_of_reach() -> None:
    index, queries, truth = _ivf_case()
    assert tune_nprobe(index, queries, truth, 1.01) == index.nlist


def test_ivf_tunes_on_references_outside_the_index_and_its_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """While nprobe is tuned the held-out references are neither indexed nor among k-means's training points."""
    seen: dict[str, object] = {}
    trained: list[np.ndarray] = []
    real_tune, real_train = models.retrieval.tune_nprobe, faiss.IndexIVFFlat.train

    def spy_tune(index, queries, truth, target):
        index.nprobe = index.nlist
        distances, _ = index.search(queries, 1)
        seen.update(ntotal=index.ntotal, nearest=distances[:, 0], queries=queries.copy())
        return real_tune(index, queries, truth, target)

    def spy_train(self, x):
        trained.append(np.array(x))
        return real_train(self, x)

    monkeypatch.setattr(models.retrieval, "tune_nprobe", spy_tune)
    monkeypatch.setattr(faiss.IndexIVFFlat, "train", spy_train)
    x = np.random.default_rng(3).standard_normal((3_000, 8)).astype(np.float32)
    index = RetrievalIndex(x, make("euclidean"), approximate_threshold=0)
    held = seen["queries"]
    assert len(held) == models.retrieval.TUNING_QUERIES and seen["ntotal"] == len(x) - len(held)
    assert (seen["nearest"] > 0).all()  # no query is in the index it tunes
    (points,) = trained
    assert not (faiss.knn(held, points, 1)[0][:, 0] == 0).any()  # nor among the k-means points
    assert len(points) == min(len(x) - len(held), models.retrieval.TRAIN_PER_LIST * index.index.nlist)
    assert index.index.ntotal == len(x)
