"""In-Shop's query → gallery Recall@K against a brute-force loop, and the partition kept from the published list
through the import into a run's metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import RunConfig
from models.data import import_benchmark
from models.data.benchmarks import BENCHMARK_MAX_SIDE
from models.distances import create_distance
from models.query_gallery import IN_SHOP_KS, query_gallery_recall, split_query_gallery
from models.run import execute_run
from tests.support.benchmarks import inshop_tree
from tests.support.images import solid


def _brute_force(x: np.ndarray, labels: np.ndarray, partition: np.ndarray, measure, ks) -> dict[str, float]:
    """For each query: every gallery image's distance by a per-pair formula, sorted, the top K's labels checked."""
    queries = [i for i in range(len(x)) if partition[i] == "query"]
    gallery = [j for j in range(len(x)) if partition[j] == "gallery"]
    hits = {k: [] for k in ks}
    for i in queries:
        if not any(labels[j] == labels[i] for j in gallery):
            continue  # unanswerable
        order = sorted(gallery, key=lambda j: measure(x[i], x[j]))
        for k in ks:
            hits[k].append(any(labels[j] == labels[i] for j in order[:k]))
    return {f"recall_at_{k}": float(np.mean(h)) for k, h in hits.items()}


def _euclidean(a, b):
    return float(np.sqrt(((a - b) ** 2).sum()))


def _negative_cosine(a, b):
    return -float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _snr(a, b):  # query a as the anchor: Var(b − a) / Var(a)
    return float(np.var(b - a) / np.var(a))


@pytest.mark.parametrize("name, measure", [("euclidean", _euclidean), ("cosine", _negative_cosine), ("snr", _snr)])
def test_recall_matches_a_brute_force_loop(name: str, measure) -> None:
    rng = np.random.default_rng(3)
    n = 120
    labels = rng.integers(0, 25, n)
    x = (rng.normal(size=(n, 6)) + labels[:, None] * 0.15).astype(np.float32)
    partition = rng.choice(["query", "gallery", "train"], size=n, p=[0.4, 0.5, 0.1])
    ks = (1, 2, 5, 10, 50)
    got = query_gallery_recall(x, labels, partition, create_distance(name, normalize=False, dim=6), ks)
    expected = _brute_force(x, labels, partition, measure, ks)
    for k in ks:
        assert got[f"recall_at_{k}"] == pytest.approx(expected[f"recall_at_{k}"]), k
    queries = partition == "query"
    gallery_labels = set(labels[partition == "gallery"])
    answerable = sum(int(label in gallery_labels) for label in labels[queries])
    assert (got["queries"], got["unanswerable"], got["gallery"]) == \
        (answerable, int(queries.sum()) - answerable, int((partition == "gallery").sum()))
    assert 0 < got["recall_at_1"] < got["recall_at_50"] <= 1


def test_a_query_is_never_its_own_gallery_match() -> None:
    # Each query's twin sits among the queries, not in the gallery: self-retrieval would score 1, the protocol 0.
    x = np.array([[0.0], [0.1], [5.0], [5.1], [0.05], [5.05]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1, 0])
    partition = np.array(["query", "query", "query", "query", "gallery", "gallery"])
    got = query_gallery_recall(x, labels, partition, create_distance("euclidean", normalize=False, dim=1), (1, 2))
    assert (got["recall_at_1"], got["recall_at_2"]) == (0.0, 1.0)


def test_without_both_roles_there_is_no_protocol() -> None:
    distance = create_distance("euclidean", normalize=False, dim=2)
    x, y = np.zeros((4, 2), np.float32), np.array([0, 0, 1, 1])
    assert split_query_gallery(None, x, y, distance) is None
    assert split_query_gallery(np.array(["train"] * 4), x, y, distance) is None
    with pytest.raises(ValueError, match="needs both query and gallery images; got 0 queries and 4 gallery"):
        query_gallery_recall(x, y, np.array(["gallery"] * 4), distance)


def test_inshop_import_keeps_the_partition_and_a_run_reports_query_to_gallery(tmp_path: Path) -> None:
    inshop_tree(tmp_path / "inshop")
    listing = (tmp_path / "inshop" / "Eval" / "list_eval_partition.txt").read_text().splitlines()[2:]
    status = {line.split()[0]: line.split()[2] for line in listing}
    image_set = import_benchmark("inshop", tmp_path / "inshop", tmp_path / "set").image_set
    assert [str(p) for p in image_set.partition] == [status[p] for p in image_set.paths]
    assert list(image_set.split) == [status[p] == "train" for p in image_set.paths]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(image_set), 4)).astype(np.float32)
    got = split_query_gallery(image_set.partition, x, image_set.labels, create_distance("cosine", False, 4))
    assert got == {**_brute_force(x, image_set.labels, image_set.partition, _negative_cosine, IN_SHOP_KS),
                   "queries": 2, "unanswerable": 0, "gallery": 2}


@pytest.mark.slow  # trains
def test_a_run_on_inshop_reports_query_to_gallery_recall(tmp_path: Path) -> None:
    inshop_tree(tmp_path / "inshop")
    image_set = import_benchmark("inshop", tmp_path / "inshop", tmp_path / "set").image_set
    config = RunConfig(embedding_dim=4, epochs=1, steps_per_epoch=1, classes_per_batch=2, samples_per_class=2,
                       image_size=8, device="cpu", amp=False, split={"mode": "predefined"})
    torch.manual_seed(0)
    execute_run(image_set, config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "query_gallery" not in metrics["train"]  # the training classes have no queries
    qg = metrics["test"]["query_gallery"]
    assert (qg["queries"], qg["gallery"]) == (2, 2)
    embeddings = np.load(tmp_path / "run" / "embeddings_test.npy")
    test = ~image_set.split
    expected = _brute_force(embeddings, image_set.labels[test], image_set.partition[test], _euclidean, IN_SHOP_KS)
    assert {k: qg[k] for k in expected} == pytest.approx(expected)


def test_benchmark_images_are_stored_large_enough_for_the_256_224_recipe(tmp_path: Path) -> None:
    # A 700 × 420 photo keeps a short side ≥ 256 (stored 512 × 307); an upload at the default 256 would not.
    inshop_tree(tmp_path / "inshop")
    big = tmp_path / "inshop" / "img" / "WOMEN" / "Dresses" / "id_00000001" / "00_1_front.jpg"
    big.write_bytes(solid((200, 40, 40), (700, 420), fmt="JPEG", seed=1))
    image_set = import_benchmark("inshop", tmp_path / "inshop", tmp_path / "set").image_set
    i = image_set.paths.index("img/WOMEN/Dresses/id_00000001/00_1_front.jpg")
    with Image.open(image_set.image_path(i)) as im:
        assert im.size == (512, 307)
    assert image_set.max_side == BENCHMARK_MAX_SIDE == 512
