"""evaluate() against PML's AccuracyCalculator (Euclidean) and against brute-force loops over a full matrix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import SNRDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from models.distances import create_distance
from models.evaluate import evaluate

KS = (1, 2, 4, 8)


def blobs(n: int = 600, classes: int = 8, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes of uneven size plus three classes of one sample each."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:3] = [100, 101, 102]
    centres = 1.2 * rng.standard_normal((103, dim))
    return (rng.standard_normal((n, dim)) + centres[y]).astype(np.float32), y


def brute_force(dist: np.ndarray, y: np.ndarray, ks=KS) -> dict[str, float]:
    """The metrics by definition, one query at a time: sort the row (self removed), read the labels."""
    scores: dict[str, list[float]] = {f"recall_at_{k}": [] for k in ks}
    scores.update(map_at_r=[], r_precision=[])
    for i in range(len(y)):
        r = int((y == y[i]).sum()) - 1
        if r == 0:
            continue  # no other member: not a query (PML's lone-query rule)
        others = [j for j in np.argsort(dist[i], kind="stable") if j != i]
        same = [y[j] == y[i] for j in others]
        for k in ks:
            scores[f"recall_at_{k}"].append(float(any(same[:k])))
        hits = 0
        precision_sum = 0.0
        for rank in range(r):
            if same[rank]:
                hits += 1
                precision_sum += hits / (rank + 1)
        scores["map_at_r"].append(precision_sum / r)
        scores["r_precision"].append(hits / r)
    return {name: float(np.mean(v)) for name, v in scores.items()}


def test_equals_pml_accuracy_calculator_for_euclidean() -> None:
    x, y = blobs()
    ours = evaluate(x, y, create_distance("euclidean"), nmi_seed=1234)  # 1234: faiss's (so PML's) k-means seed
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision", "NMI"),
                              k="max_bin_count", device=torch.device("cpu"))
    pml = calc.get_accuracy(x, y)
    assert ours["precision_at_1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert ours["nmi"] == pytest.approx(pml["NMI"], abs=1e-3)
    assert 0.3 < ours["map_at_r"] < 0.9  # overlapping classes: the test is not won by a trivial 1.0

    per_class = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                                   k="max_bin_count", device=torch.device("cpu"), return_per_class=True)
    pml_per_class = per_class.get_accuracy(x, y)
    answerable = [c for c in ours["per_class"] if c["count"] > 1]
    np.testing.assert_allclose([c["map_at_r"] for c in answerable],
                               pml_per_class["mean_average_precision_at_r"], atol=1e-6)
    np.testing.assert_allclose([c["r_precision"] for c in answerable], pml_per_class["r_precision"], atol=1e-6)
    lone = [c for c in ours["per_class"] if c["count"] == 1]
    assert [c["label"] for c in lone] == [100, 101, 102] and all(c["map_at_r"] is None for c in lone)
    assert ours["num_queries"] == len(y) - 3 and ours["num_classes"] == 11


def test_recall_at_k_equals_a_brute_force_loop() -> None:
    x, y = blobs(n=200, seed=1)
    ours = evaluate(x, y, create_distance("euclidean"))
    dist = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    expected = brute_force(dist, y)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_snr_ranking_equals_brute_force_with_pml_snr_distance() -> None:
    x, y = blobs(n=200, seed=2)
    ours = evaluate(x, y, create_distance("snr"))
    pml_snr = SNRDistance(normalize_embeddings=False)  # our distances never normalise unless told
    dist = pml_snr(torch.from_numpy(x).double()).numpy()  # rows are anchors (queries)
    assert not np.allclose(dist, dist.T)  # asymmetric: using the transposed matrix would be a different test
    expected = brute_force(dist, y)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_duplicates_find_each_other_not_themselves() -> None:
    x, y = blobs(n=60, seed=3)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])
    result = evaluate(x, y, create_distance("cosine"))
    assert result["precision_at_1"] == 1.0  # the twin (same class, distance 0) is always the nearest other
    assert result["num_queries"] == len(y)  # the one-sample classes now have a twin


def test_fewer_points_than_k() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2], [9.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 2])
    result = evaluate(x, y, create_distance("euclidean"), ks=(1, 2, 8, 16))
    assert result["k"] == 4
    assert result["recall_at_1"] == result["recall_at_16"] == result["map_at_r"] == 1.0
    assert result["per_class"][2] == {"label": 2, "count": 1, "recall_at_1": None, "recall_at_2": None,
                                      "recall_at_8": None, "recall_at_16": None, "precision_at_1": None,
                                      "map_at_r": None, "r_precision": None}


def test_only_lone_samples_give_no_retrieval_metric() -> None:
    result = evaluate(np.eye(3, dtype=np.float32), np.array([0, 1, 2]), create_distance("euclidean"))
    assert result["map_at_r"] is None and result["num_queries"] == 0
    assert result["nmi"] == pytest.approx(1.0)


def test_bad_inputs_say_what_to_fix() -> None:
    d = create_distance("euclidean")
    with pytest.raises(ValueError, match="one per embedding"):
        evaluate(np.zeros((4, 2), np.float32), np.array([0, 1, 0]), d)
    with pytest.raises(ValueError, match="at least 2"):
        evaluate(np.zeros((1, 2), np.float32), np.array([0]), d)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((3, 2), np.nan, np.float32), np.array([0, 1, 0]), d)
