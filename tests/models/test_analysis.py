"""models.analysis against slow, obviously-correct loops over every pair, under symmetric, inverted (cosine)
and asymmetric (relative Mahalanobis) distances, with chunks small enough that the blocks really split."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import models.analysis as analysis
from models.distances import create_distance
from models.errors import InvalidInput

DISTANCES = [("euclidean", False), ("cosine", False), ("relative_mahalanobis", True)]


def _data(seed: int = 0, n: int = 37, classes: int = 5, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    labels[:classes] = np.arange(classes)
    centres = rng.normal(size=(classes, dim)) * 1.5
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def _d(distance, x: np.ndarray, i: int, j: int) -> float:
    """One pair, i as the anchor, as a dissimilarity."""
    with torch.no_grad():
        v = float(distance(torch.from_numpy(x[i:i + 1]), torch.from_numpy(x[j:j + 1]))[0, 0])
    return 1.0 - v if distance.is_inverted else v


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "CHUNK_ELEMENTS", 100)  # 2-3 rows per block


def _distance(name: str, normalize: bool, dim: int):
    d = create_distance(name, normalize=normalize, dim=dim)
    if name == "relative_mahalanobis":
        with torch.no_grad():
            for p in d.parameters():
                p.copy_(torch.randn_like(p) * 0.3 + torch.eye(p.shape[0]) if p.ndim == 2 else p)
    return d


@pytest.mark.parametrize("name,normalize", DISTANCES)
def test_failures_match_the_pair_loop(name: str, normalize: bool) -> None:
    x, y = _data()
    dist = _distance(name, normalize, x.shape[1])
    got = analysis.failures(x, y, dist, k=3)
    n = len(x)
    want_rows, margins = [], []
    for i in range(n):
        others = [(j, _d(dist, x, i, j)) for j in range(n) if j != i]
        nn = min(others, key=lambda t: t[1])[0]
        if y[nn] == y[i]:
            continue
        want_rows.append(i)
        near_other = min(v for j, v in others if y[j] != y[i])
        mates = [v for j, v in others if y[j] == y[i]]
        margins.append(near_other - max(mates) if mates else np.nan)
        top = sorted(others, key=lambda t: t[1])[:3]
        row = len(want_rows) - 1
        np.testing.assert_allclose(got["distances"][row], [v for _, v in top], rtol=1e-4, atol=1e-5)
    assert got["rows"].tolist() == want_rows and len(want_rows) > 0
    np.testing.assert_allclose(got["margin"], margins, rtol=1e-4, atol=1e-5)
    assert np.all(got["margin"][~np.isnan(got["margin"])] < 1e-6)  # a failure's margin is never positive


def test_failure_order_puts_the_worst_first_and_nan_last() -> None:
    v = np.array([0.5, np.nan, -2.0, 1.0])
    assert analysis.failure_order(v, descending=False).tolist() == [2, 0, 3, 1]
    assert analysis.failure_order(v, descending=True).tolist() == [3, 0, 2, 1]


@pytest.mark.parametrize("name,normalize", DISTANCES)
def test_class_pairs_match_the_pair_loop(name: str, normalize: bool) -> None:
    x, y = _data(1)
    classes = 6  # class 5 is absent: NaN row and column, no confusion
    dist = _distance(name, normalize, x.shape[1])
    got = analysis.class_pairs(x, y, dist, classes, k=4)
    n = len(x)
    gap = np.full((classes, classes), np.inf)
    confusion = np.zeros((classes, classes), int)
    for i in range(n):
        d = [(j, _d(dist, x, i, j)) for j in range(n) if j != i]
        for j, v in d:
            if y[i] != y[j]:
                gap[y[i], y[j]] = gap[y[j], y[i]] = min(gap[y[i], y[j]], v)
        for j, _ in sorted(d, key=lambda t: t[1])[:4]:
            confusion[y[i], y[j]] += 1
    gap[~np.isfinite(gap)] = np.nan
    np.testing.assert_allclose(got["gap"], gap, rtol=1e-4, atol=1e-5)
    assert np.isnan(np.diag(got["gap"])).all() and np.isnan(got["gap"][5]).all()
    assert (got["confusion"] == confusion).all() and got["confusion"].sum() == 4 * n
    assert sorted(got["order"].tolist()) == got["present"].tolist() == [0, 1, 2, 3, 4]


def test_class_pairs_refuse_more_classes_than_a_readable_matrix_before_allocating_it() -> None:
    limit = analysis.MAX_PAIR_CLASSES
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * (limit + 1), 4)).astype(np.float32)
    y = np.repeat(np.arange(limit + 1), 2)
    dist = _distance("euclidean", False, 4)
    with pytest.raises(InvalidInput, match=f"at most {limit} classes and this split has {limit + 1}"):
        analysis.class_pairs(x, y, dist, 11_000, k=1)
    keep = y < limit  # exactly at the limit it answers
    assert len(analysis.class_pairs(x[keep], y[keep], dist, limit, k=1)["order"]) == limit


def test_the_clustering_order_keeps_touching_classes_together() -> None:
    # classes 0, 2, 4 near each other, 1, 3 far away: the order must not interleave the two groups.
    rng = np.random.default_rng(0)
    centres = {0: 0.0, 2: 1.0, 4: 2.0, 1: 100.0, 3: 101.0}
    y = np.repeat(list(centres), 6)
    x = np.stack([np.full(3, centres[c]) for c in y]) + rng.normal(scale=0.05, size=(len(y), 3))
    order = analysis.class_pairs(x.astype(np.float32), y, create_distance("euclidean"), 5)["order"].tolist()
    groups = [c in (1, 3) for c in order]
    assert groups in ([False] * 3 + [True] * 2, [True] * 2 + [False] * 3)


@pytest.mark.parametrize("name,normalize", DISTANCES)
def test_selection_matches_the_pair_loop(name: str, normalize: bool) -> None:
    x, y = _data(2)
    dist = _distance(name, normalize, x.shape[1])
    chosen = np.array([0, 3, 4, 10, 11, 20])
    got = analysis.selection(x, y, dist, chosen, k=3)
    n = len(x)
    mask = np.isin(np.arange(n), chosen)
    correct, inside, rest = [], [], []
    for i in range(n):
        d = sorted(((j, _d(dist, x, i, j)) for j in range(n) if j != i), key=lambda t: t[1])
        correct.append(y[d[0][0]] == y[i])
        if mask[i]:
            inside.append(np.mean([mask[j] for j, _ in d[:3]]))
            rest.append(min(v for j, v in d if not mask[j]))
    correct = np.array(correct)
    assert got["size"] == 6 and got["rest_size"] == n - 6
    assert got["class_counts"].tolist() == np.bincount(y[chosen], minlength=y.max() + 1).tolist()
    assert got["correct_at_1"]["selection"] == pytest.approx(correct[mask].mean())
    assert got["correct_at_1"]["rest"] == pytest.approx(correct[~mask].mean())
    assert got["knn_inside"] == pytest.approx(np.mean(inside))
    assert got["nearest_rest_mean"] == pytest.approx(np.mean(rest), rel=1e-4)
    centre = x[chosen].mean(axis=0)
    with torch.no_grad():
        radius = np.mean([float(dist.pairwise_distance(torch.from_numpy(centre[None]), torch.from_numpy(x[i:i + 1]))[0])
                          for i in chosen])
    radius = 1 - radius if dist.is_inverted else radius
    assert got["radius_mean"]["selection"] == pytest.approx(radius, rel=1e-4)


def test_an_empty_selection_is_refused() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="empty"):
        analysis.selection(x, y, create_distance("euclidean"), np.array([], int))
