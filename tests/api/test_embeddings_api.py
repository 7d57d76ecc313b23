"""POST /api/embeddings: vectors files become runs of origin `embeddings`; every bad field is a 400 that writes
nothing; views that need a network or images answer 409."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.distances import create_distance
from models.evaluate import evaluate
from models.runfolder import RunFolder
from tests.support.polling import wait_for


def npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def clustered(classes: int = 6, per_class: int = 5, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors around one centre per class (so the metrics are neither 0 nor 1 by construction), labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def post(c: TestClient, body: bytes, filename: str = "e.npz", **form: str) -> Any:
    return c.post("/api/embeddings", files={"file": (filename, body, "application/octet-stream")},
                  data={"name": "imported", **form})


def nothing_written(c: TestClient, data_dir: Path, datasets_before: int) -> None:
    assert c.get("/api/runs").json()["count"] == 0
    assert len(c.get("/api/datasets").json()["data"]) == datasets_before
    assert not any((data_dir / "runs").iterdir())
    assert len(list((data_dir / "datasets").iterdir())) == datasets_before
    assert not any((data_dir / "tmp").iterdir())


@pytest.mark.slow
def test_labels_only_import_is_measured_like_any_run(client: TestClient, settings: Any) -> None:
    c = client
    vectors, labels = clustered()
    names = np.array([f"c{i}" for i in range(6)])[labels]
    r = post(c, npz(vectors=vectors, labels=names), distance="cosine")
    assert r.status_code == 201, r.text
    run = wait_for(c, r.json()["id"], ("done", "failed"))
    assert run["status"] == "done", run
    assert run["origin"] == "embeddings" and run["summary"]["origin"] == "embeddings"
    assert run["summary"]["embedding_dim"] == 8 and run["summary"]["distance"] == "cosine"
    # The zero-shot first_half split of the sorted classes (c0–c2 train, c3–c5 test), measured exactly as
    # models.evaluate.evaluate measures the same vectors.
    run_dir = settings.data_dir / "runs" / run["id"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for side, rows in (("train", labels < 3), ("test", labels >= 3)):
        expected = evaluate(vectors[rows], labels[rows], create_distance("cosine", dim=8))
        for key in ("recall_at_1", "recall_at_2", "map_at_r", "r_precision", "nmi", "precision_at_1"):
            assert metrics[side][key] == pytest.approx(expected[key], rel=1e-6), (side, key)
        got = [v for p in metrics[side]["per_class"] for v in (p["count"], p["map_at_r"], p["recall_at_1"])]
        want = [v for p in expected["per_class"] for v in (p["count"], p["map_at_r"], p["recall_at_1"])]
        assert got == pytest.approx(want, rel=1e-6)
        # the map's wrong@1 column comes from the same search, stored at import: the explorer never re-searches
        assert np.array_equal(RunFolder(run_dir).correct_at_1(side), expected["correct_at_1"])
    assert 0 < metrics["test"]["map_at_r"] < 1
    assert np.array_equal(np.load(run_dir / "embeddings_test.npy"), vectors[labels >= 3])

    # Views that need no network work; those that need images or a model answer 409, never 500.
    rid, ds = run["id"], run["dataset_id"]
    assert c.get(f"/api/datasets/{ds}").json()["has_images"] is False
    assert c.get(f"/api/runs/{rid}/points", params={"split": "all"}).status_code == 200
    stats = c.get(f"/api/runs/{rid}/stats").json()
    assert stats["metrics"]["test"]["map_at_r"] == pytest.approx(metrics["test"]["map_at_r"])
    assert "c4" in json.dumps(stats["stats"]["test"]) and "c0" not in json.dumps(stats["stats"]["test"])
    nb = c.get(f"/api/runs/{rid}/neighbors", params={"image_id": 20, "k": 3})
    assert nb.status_code == 200 and len(nb.json()["neighbors"]) == 3
    for path in (f"/api/runs/{rid}/failures", f"/api/runs/{rid}/class-pairs"):
        assert c.get(path).status_code == 200, path
    other = wait_for(c, post(c, npz(vectors=vectors * 2, labels=names)).json()["id"], ("done", "failed"))
    assert other["status"] == "done", other
    assert c.get("/api/compare", params={"a": rid, "b": other["id"]}).status_code == 200
    sel = c.post(f"/api/runs/{rid}/selection", json={"image_ids": [18, 19, 20, 25], "split": "test"})
    assert sel.status_code == 200, sel.text
    assert c.get(f"/api/runs/{rid}/failures", params={"sort": "lipschitz"}).status_code == 400  # no network maps
    assert c.get(f"/api/runs/{rid}/export", params={"what": "embeddings"}).status_code == 200
    assert c.get(f"/api/runs/{rid}/export", params={"what": "stats"}).status_code == 200
    for r in (c.get(f"/api/datasets/{ds}/images/20/thumb"),
              c.get(f"/api/runs/{rid}/export", params={"what": "checkpoint"}),
              c.post(f"/api/runs/{rid}/query", files={"file": ("q.png", b"\x89PNG", "image/png")})):
        assert r.status_code == 409, r.text
    r = c.post("/api/runs", json={"dataset_id": ds, "config": {"image_size": 16}})
    assert r.status_code == 400 and "no images" in r.json()["detail"]
    r = post(c, npz(vectors=vectors, labels=names), dataset_id=ds)  # linking to a labels-only set
    assert r.status_code == 400 and r.json()["detail"].startswith("dataset_id:"), r.text


@pytest.mark.slow
def test_linked_dataset_with_ids_split_and_npy(client: TestClient, dataset: dict[str, Any]) -> None:
    c, ds = client, dataset["id"]
    ids = np.arange(32)[::-1].copy()  # every image of the 4 × 8 zip, in another order
    truth = np.repeat(np.arange(4), 8)[ids]  # the zip's classes are stored in order, 8 images each
    vectors = (np.eye(4, 6)[truth] * 3 + np.random.default_rng(1).normal(size=(32, 6))).astype(np.float64)
    split = np.where(ids % 2 == 0, "train", "test")  # an item split: every class on both sides
    body = io.BytesIO()
    rec = np.zeros(32, dtype=[("vectors", "f8", (6,)), ("labels", "i8"), ("image_ids", "i8"), ("split", "U5")])
    rec["vectors"], rec["labels"], rec["image_ids"], rec["split"] = vectors, truth, ids, split
    np.save(body, rec)
    r = post(c, body.getvalue(), "e.npy", dataset_id=ds)
    assert r.status_code == 201, r.text
    run = wait_for(c, r.json()["id"], ("done", "failed"))
    assert run["status"] == "done" and run["dataset_id"] == ds, run
    assert run["summary"]["num_train"] == 16 and run["summary"]["num_test"] == 16
    nb = c.get(f"/api/runs/{run['id']}/neighbors", params={"image_id": 1, "k": 2}).json()
    thumb = c.get(nb["neighbors"][0]["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"


def _bad_cases() -> list[tuple[str, bytes, dict[str, str], str]]:
    v, y = clustered()
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    nan = v.copy()
    nan[3, 1] = np.nan
    return [
        ("not numpy", b"hello world", {}, "file"),
        ("parquet", b"PAR1" + b"\0" * 32, {}, "Parquet"),
        ("pickled object", obj.getvalue(), {}, "file"),
        ("unknown array", npz(vectors=v, labels=y, extra=y), {}, "extra"),
        ("no vectors", npz(labels=y), {}, "vectors"),
        ("no labels", npz(vectors=v), {}, "labels"),
        ("1-d vectors", npz(vectors=v[:, 0], labels=y), {}, "vectors"),
        ("no rows", npz(vectors=v[:0], labels=y[:0]), {}, "vectors: 0 rows"),
        ("bool labels", npz(vectors=v, labels=y > 2), {}, "labels"),
        ("empty class name", npz(vectors=v, labels=np.where(y == 0, "", "a" + y.astype(str))), {}, "labels: empty"),
        ("truncated", npz(vectors=v, labels=y)[:300], {}, "file"),
        ("int vectors", npz(vectors=v.astype(np.int32), labels=y), {}, "vectors"),
        ("NaN", npz(vectors=nan, labels=y), {}, "vectors: row 3"),
        ("1 dimension", npz(vectors=v[:, :1], labels=y), {}, "vectors"),
        ("too many dimensions", npz(vectors=np.zeros((30, 4097), np.float32), labels=y), {}, "4096"),
        ("labels length", npz(vectors=v, labels=y[:-1]), {}, "labels"),
        ("float labels", npz(vectors=v, labels=y.astype(float)), {}, "labels"),
        ("negative labels", npz(vectors=v, labels=y - 1), {}, "labels"),
        ("3 classes", npz(vectors=v[:15], labels=y[:15]), {}, "at least 4"),
        ("singleton class", npz(vectors=v[:26], labels=y[:26]), {}, "labels"),
        ("bad split word", npz(vectors=v, labels=y, split=np.array(["train", "val"] * 15)), {}, "split"),
        ("bad split number", npz(vectors=v, labels=y, split=np.full(30, 2)), {}, "split"),
        ("one-sided split", npz(vectors=v, labels=y, split=np.zeros(30, int)), {}, "test side"),
        ("ids without dataset", npz(vectors=v, labels=y, image_ids=np.arange(30)), {}, "image_ids"),
        ("learned distance", npz(vectors=v, labels=y), {"distance": "mahalanobis"}, "distance"),
        ("oversized header", _huge_header(), {}, "MiB"),
    ]


def _huge_header() -> bytes:
    """An .npy whose header claims 10^12 floats: refused before any data is read."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    return buf.getvalue()


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda case: case[0])
def test_bad_files_are_400_naming_the_field_and_write_nothing(client: TestClient, settings: Any,
                                                              case: tuple) -> None:
    _, body, form, field = case
    r = post(client, body, **form)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]
    nothing_written(client, settings.data_dir, 0)


@pytest.mark.slow
def test_compressed_npz_without_labels_takes_the_datasets(client: TestClient, dataset: dict[str, Any]) -> None:
    buf = io.BytesIO()
    v, _ = clustered(4, 8, 6)
    np.savez_compressed(buf, vectors=v, image_ids=np.arange(32), split=np.arange(32) % 2)
    r = post(client, buf.getvalue(), dataset_id=dataset["id"])
    assert r.status_code == 201, r.text
    run = wait_for(client, r.json()["id"], ("done", "failed"))
    assert run["status"] == "done" and run["summary"]["num_train"] == 16, run


def test_linked_dataset_refusals(client: TestClient, dataset: dict[str, Any], settings: Any) -> None:
    c, ds = client, dataset["id"]
    v, _ = clustered(4, 8, 6)
    truth = np.repeat(np.arange(4), 8)
    for arrays, field in ((dict(vectors=v, labels=truth), "image_ids: missing"),
                          (dict(vectors=v, labels=truth, image_ids=np.arange(32) + 1), "image_ids: 32"),
                          (dict(vectors=v, labels=truth, image_ids=np.r_[0, np.arange(31)]), "image_ids: each"),
                          (dict(vectors=v, labels=(truth + 1) % 4, image_ids=np.arange(32)), "labels: row 0")):
        r = post(c, npz(**arrays), dataset_id=ds)
        assert r.status_code == 400 and field in r.json()["detail"], r.text
        nothing_written(c, settings.data_dir, 1)
    assert post(c, npz(vectors=v, image_ids=np.arange(32)), dataset_id="0" * 12).status_code == 404
