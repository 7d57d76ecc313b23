"""PCA and Procrustes thoroughly; UMAP once (one module-scoped fixture: its first fit compiles numba)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from models.distances import create_distance
from models.projection import align, knn_graph, knn_vote, pca_2d, project, warm_up_umap


def blobs(n: int = 300, classes: int = 3, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (rng.standard_normal((n, dim)) + 4 * rng.standard_normal((classes, dim))[y]).astype(np.float32), y


TURN = np.array([[0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)


def separation(xy: np.ndarray, y: np.ndarray) -> float:
    """How well classes stay apart on the map: 5-NN accuracy of the labels in 2-D."""
    return KNeighborsClassifier(5).fit(xy, y).score(xy, y)


def test_pca_is_the_top_two_principal_directions() -> None:
    rng = np.random.default_rng(1)
    x = ((rng.standard_normal((200, 5)) * [5, 2, 0.5, 0.2, 0.1]) @ np.linalg.qr(rng.standard_normal((5, 5)))[0]
         + 3.0).astype(np.float32)
    xy = project(x, "pca")
    assert xy.dtype == np.float32 and xy.shape == (200, 2)
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    for axis in range(2):  # coordinate i = projection on the i-th largest eigenvector, up to sign
        expected = centred @ vectors[:, -1 - axis]
        np.testing.assert_allclose(xy[:, axis] * np.sign(expected @ xy[:, axis]), expected, atol=1e-4)
    np.testing.assert_array_equal(project(x, "pca"), xy)  # deterministic, signs included


def test_pca_on_the_distance_view() -> None:
    x, _ = blobs(n=50, dim=6)
    shifted = x + np.random.default_rng(2).standard_normal((50, 1)).astype(np.float32) * 10
    # SNR measures per-vector centred embeddings: a per-vector constant shift is invisible to it...
    snr = create_distance("snr")
    np.testing.assert_allclose(project(shifted, "pca", distance=snr), project(x, "pca", distance=snr), atol=1e-3)
    # ...but not to Euclidean, whose map it changes
    assert not np.allclose(project(shifted, "pca"), project(x, "pca"), atol=1e-1)


def test_pca_of_degenerate_inputs() -> None:
    assert project(np.ones((1, 4), np.float32), "pca").tolist() == [[0.0, 0.0]]
    line = pca_2d(np.arange(6, dtype=np.float32).reshape(6, 1))
    assert line.shape == (6, 2) and (line[:, 1] == 0).all()
    with pytest.raises(ValueError, match="'pca' or 'umap'"):
        project(np.ones((3, 2), np.float32), "tsne")


@pytest.mark.parametrize("reflect", [False, True])
def test_align_undoes_rotation_reflection_scale_and_shift(reflect: bool) -> None:
    parent = np.random.default_rng(3).standard_normal((40, 2)).astype(np.float32)
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if reflect:
        rotation = rotation @ np.diag([1.0, -1.0])
    child = 3.7 * parent @ rotation + np.array([5.0, -2.0])
    np.testing.assert_allclose(align(child, parent), parent, atol=1e-5)


def test_align_fits_on_shared_ids_and_moves_every_child_point() -> None:
    rng = np.random.default_rng(4)
    parent_ids, child_ids = np.arange(0, 30), np.arange(10, 50)  # 20 samples in common
    truth = rng.standard_normal((50, 2))  # one underlying map; the child sees it turned, scaled and moved
    child = 0.5 * truth[child_ids] @ TURN - 7
    aligned = align(child, truth[parent_ids], child_ids=child_ids, parent_ids=parent_ids)
    np.testing.assert_allclose(aligned, truth[child_ids], atol=1e-5)  # also the 20 child-only samples
    with pytest.raises(ValueError, match="at least 3 shared"):
        align(child[:2], truth[:2], child_ids=np.array([0, 1]), parent_ids=np.array([5, 6]))
    with pytest.raises(ValueError, match="pass child_ids and parent_ids"):
        align(child, truth)


def slow_vote(points: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The leave-one-out k-NN classifier spelled out: sort the other points by distance, count the first k's labels,
    the most frequent wins, a tie goes to the tied label met first."""
    right = 0
    for i, p in enumerate(points):
        others = [j for j in np.argsort(np.linalg.norm(points - p, axis=1), kind="stable") if j != i][:k]
        counts: dict[int, int] = {}
        for j in others:
            counts[labels[j]] = counts.get(labels[j], 0) + 1
        best = max(counts.values())
        right += next(labels[j] for j in others if counts[labels[j]] == best) == labels[i]
    return right / len(points)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_vote_is_the_leave_one_out_knn_classifier(k: int) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 120)
    points = rng.standard_normal((120, 2)) + labels[:, None] * 0.7  # overlapping classes: ties and mistakes occur
    assert knn_vote(points, labels, k) == pytest.approx(slow_vote(points, labels, k))
    assert 0.3 < knn_vote(points, labels, k) < 0.95  # neither trivial nor perfect here
    x, y = blobs(n=200)
    assert knn_vote(x, y) == 1.0 and knn_vote(pca_2d(x), y) == 1.0  # well-separated blobs in 16-d and in 2-d
    with pytest.raises(ValueError, match="at least 2 points"):
        knn_vote(points[:1], labels[:1])


def test_knn_graph_counts_umap_style() -> None:
    x, _ = blobs(n=20, dim=4)
    ids, dists = knn_graph(x, create_distance("cosine"), n_neighbors=5)
    assert ids.shape == dists.shape == (20, 4)  # UMAP's 5 neighbours include the point itself
    assert not (ids == np.arange(20)[:, None]).any()
    assert (dists >= 0).all() and (np.diff(dists, axis=1) >= 0).all()  # 1 − cosine, closest first


@pytest.mark.parametrize("name", ["euclidean", "cosine", "snr"])
def test_knn_graph_equals_an_exact_search_under_the_distance(name: str) -> None:
    """The graph from models.knn (each pair once) is the exact search RetrievalIndex makes, values included."""
    from models.retrieval import RetrievalIndex

    x, _ = blobs(n=300, dim=8)
    distance = create_distance(name)
    ids, dists = knn_graph(x, distance, n_neighbors=15)
    index = RetrievalIndex(x, distance, approximate_threshold=None)
    want_ids, values = index.search(x, 14, exclude_self_ids=np.arange(300))
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(dists, np.maximum(1 - values if name == "cosine" else values, 0), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.umap
@pytest.mark.parametrize("name", ["euclidean", "cosine"])
def test_knn_graph_by_nn_descent_finds_the_exact_neighbours_with_exact_values(name: str) -> None:
    """Past EXACT_GRAPH_UP_TO the lists come from NN-descent: nearly all the exact ones, each value exact."""
    x, _ = blobs(n=600, classes=6, dim=12)
    distance = create_distance(name)
    exact_ids, exact_dists = knn_graph(x, distance, exact=True)
    ids, dists = knn_graph(x, distance, exact=False, seed=3)
    assert ids.shape == exact_ids.shape == (600, 14) and not (ids == np.arange(600)[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / 14 for a, b in zip(ids, exact_ids)])
    assert recall > 0.95
    assert (np.diff(dists, axis=1) >= 0).all()
    same = ids == exact_ids  # where both lists name the same point at the same rank, the same value
    np.testing.assert_allclose(dists[same], exact_dists[same], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(knn_graph(x, distance, exact=False, seed=3)[0], ids)  # seeded: reproducible


@pytest.fixture(scope="module")
def umap_maps() -> dict[str, np.ndarray]:
    """Every UMAP path once on 300 points: fitted whole, on a sample + transform, and from a parent's map.
    warm_up_umap goes first: it pays the numba compilation the fits below would pay anyway."""
    warm_up_umap()
    x, y = blobs()
    whole = project(x, "umap", seed=0)
    return {
        "x": x, "y": y, "whole": whole,
        "again": project(x, "umap", seed=0),
        "sampled": project(x, "umap", seed=0, sample_threshold=200, distance=create_distance("snr")),
        # started from the parent's map turned by 90°, and given the k-NN graph
        "child": project(x, "umap", seed=1, init=whole @ TURN, knn=knn_graph(x)),
    }


@pytest.mark.slow
@pytest.mark.umap
def test_umap_maps_keep_classes_apart(umap_maps) -> None:
    y = umap_maps["y"]
    for name in ("whole", "sampled", "child"):
        xy = umap_maps[name]
        assert xy.shape == (300, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
        assert separation(xy, y) > 0.95, name
    np.testing.assert_array_equal(umap_maps["again"], umap_maps["whole"])  # seeded: reproducible


@pytest.fixture(scope="module")
def clustered_maps() -> dict[str, np.ndarray]:
    """40 overlapping classes (bench.data's regime): today's maps beside the previous settings' (a PCA start and
    umap-learn's 500 epochs, also from a parent's map, which umap-learn squeezes into a 10 × 10 box)."""
    from bench.data import clustered
    from models.projection import MIN_DIST, _umap

    x, y = clustered(2000, dim=32, class_size=50)
    child = x + 0.25 / np.sqrt(32) * np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    graph, child_graph = knn_graph(x), knn_graph(child)
    parent = project(x, "umap", knn=graph, seed=0)
    return {
        "y": y, "new": parent, "old": _umap(graph, pca_2d(x), 0, MIN_DIST, 2).embedding_,
        "again": project(x, "umap", knn=graph, seed=0),
        "new child": project(child, "umap", knn=child_graph, seed=0, init=parent),
        "old child": _umap(child_graph, parent, 0, MIN_DIST, 2).embedding_,
    }


@pytest.mark.slow
@pytest.mark.umap
def test_umap_keeps_the_previous_settings_quality_on_overlapping_classes(clustered_maps) -> None:
    """Spectral start (fresh) and 30 gentle epochs (from a parent's map): the 10-NN vote within 0.01 of the
    previous settings or better, a map spread over the plane, and the same map for the same seed."""
    y = clustered_maps["y"]
    for new, old in (("new", "old"), ("new child", "old child")):
        xy = clustered_maps[new]
        assert xy.shape == (2000, 2) and np.isfinite(xy).all()
        assert len(np.unique(xy.round(3), axis=0)) > 1900 and (xy.std(axis=0) > 1).all()  # not collapsed
        assert knn_vote(xy, y) >= knn_vote(clustered_maps[old], y) - 0.01, new
        assert knn_vote(xy, y) > 0.5, new  # the classes are there to keep: no test passes on two bad maps
    np.testing.assert_array_equal(clustered_maps["again"], clustered_maps["new"])


@pytest.mark.slow
@pytest.mark.umap
def test_umap_started_from_a_parent_map_keeps_its_orientation(umap_maps) -> None:
    start, child = umap_maps["whole"] @ TURN, umap_maps["child"]
    for axis in range(2):  # each axis of the child follows the same axis of its start (the turned parent)
        assert np.corrcoef(child[:, axis], start[:, axis])[0, 1] > 0.9


def test_pca_in_3d_adds_the_third_principal_coordinate() -> None:
    x, _ = blobs(n=60)
    flat, deep = pca_2d(x), pca_2d(x, dim=3)
    assert deep.shape == (60, 3)
    np.testing.assert_allclose(deep[:, :2], flat, rtol=1e-4, atol=1e-4)
    centred = x - x.mean(axis=0)
    third = np.linalg.svd(centred, full_matrices=False)[2][2]  # the reference: the third right singular vector
    np.testing.assert_allclose(np.abs(deep[:, 2]), np.abs(centred @ third), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("kw", "field"), [({"n_neighbors": 1}, "n_neighbors"), ({"min_dist": 1.0}, "min_dist"),
                                           ({"dim": 4}, "dim")])
def test_map_parameters_out_of_range_name_the_parameter(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        project(blobs(n=20)[0], "pca", **kw)


@pytest.mark.slow
@pytest.mark.umap
def test_umap_parameters_and_3d(umap_maps) -> None:
    x, y = umap_maps["x"], umap_maps["y"]
    tight = project(x, "umap", seed=0, n_neighbors=5, min_dist=0.0, dim=3)
    loose = project(x, "umap", seed=0, n_neighbors=5, min_dist=0.9, dim=3)
    assert tight.shape == loose.shape == (300, 3) and np.isfinite(tight).all()
    assert separation(tight, y) > 0.95
    # min_dist reaches umap-learn: a larger one spreads each class's points further apart
    spread = lambda xy: np.median([np.linalg.norm(xy[y == k] - xy[y == k].mean(0), axis=1).mean()  # noqa: E731
                                   / np.linalg.norm(xy - xy.mean(0), axis=1).mean() for k in range(3)])
    assert spread(loose) > spread(tight)
