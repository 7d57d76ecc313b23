"""Exploring finished runs over HTTP: points (JSON and binary), stats, neighbours, image queries, comparison,
export, and importing an exported checkpoint."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import zipfile
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import RunConfig
from server import points_codec
from tests.support.app import Trained
from tests.support.images import png_bytes
from tests.support.polling import wait_for

pytestmark = pytest.mark.slow  # every test explores the session-wide `trained` runs (spawned workers)


def test_points_json_and_binary_agree(trained: Trained) -> None:
    c, a = trained.client, trained.a
    body = c.get(f"/api/runs/{a['id']}/points", params={"split": "test", "projection": "pca"}).json()
    cols = body["columns"]
    n = body["count"]
    assert n == 16 and all(len(cols[k]) == n for k in ("image_id", "label", "split", "x", "y", "lipschitz",
                                                        "correct_at_1"))
    assert cols["logdet"] is None  # run a has no flow layer
    assert set(cols["split"]) == {1} and set(cols["correct_at_1"]) <= {0, 1}
    names = [body["class_names"][i] for i in cols["label"]]
    dataset_classes = {im["id"]: im["class"] for im in
                       c.get(f"/api/datasets/{trained.dataset['id']}/images", params={"limit": 100}).json()["data"]}
    assert names == [dataset_classes[i] for i in cols["image_id"]]

    raw = c.get(f"/api/runs/{a['id']}/points", params={"split": "test", "projection": "pca", "format": "binary"})
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["content-encoding"] == "gzip"  # httpx undid it, as a browser does
    header, binary = points_codec.decode(raw.content)
    assert header["count"] == n and header["class_names"] == body["class_names"]
    for name in ("image_id", "label", "correct_at_1"):
        assert binary[name].tolist() == cols[name]
    step = (max(cols["x"]) - min(cols["x"])) / points_codec.STEPS  # quantised to 16 bits over the map's box
    np.testing.assert_allclose(binary["x"], cols["x"], atol=step / 2 + 1e-6)
    assert "logdet" not in binary and header["absent"] == ["logdet"]  # no flow layer: no bytes for it


def test_points_of_all_samples_and_flow_columns(trained: Trained) -> None:
    body = trained.client.get(f"/api/runs/{trained.b['id']}/points", params={"split": "all", "projection": "pca"}).json()
    cols = body["columns"]
    assert body["count"] == 32 and cols["split"] == [0] * 16 + [1] * 16
    assert sorted(cols["image_id"]) == list(range(32))
    assert cols["logdet"] is not None and all(np.isfinite(cols["logdet"]))  # run b has a flow layer


@pytest.mark.umap
def test_umap_is_computed_once_and_aligned_to_the_parent(trained: Trained) -> None:
    c = trained.client
    # The child first: its parent's map must be made first, since the child's map is aligned to it.
    b = c.get(f"/api/runs/{trained.b['id']}/points", params={"projection": "umap"}).json()["columns"]
    for run in (trained.a, trained.b):
        assert (trained.data_dir / "runs" / run["id"] / "projection_umap_test.npy").is_file()
    a = c.get(f"/api/runs/{trained.a['id']}/points", params={"projection": "umap"}).json()["columns"]
    assert c.get(f"/api/runs/{trained.b['id']}/points", params={"projection": "umap"}).json()["columns"]["x"] == b["x"]
    assert a["image_id"] == b["image_id"]
    xa, xb = np.c_[a["x"], a["y"]], np.c_[b["x"], b["y"]]
    # Procrustes-aligned to the parent's map: same centre, and no further rotation brings it closer
    np.testing.assert_allclose(xb.mean(0), xa.mean(0), atol=1e-3 * np.abs(xa).max())
    turned = (xb - xb.mean(0)) @ np.array([[0.0, -1.0], [1.0, 0.0]]) + xb.mean(0)
    assert np.linalg.norm(xb - xa) <= np.linalg.norm(turned - xa)


def test_stats_hold_metrics_per_class_values_and_history(trained: Trained) -> None:
    body = trained.client.get(f"/api/runs/{trained.a['id']}/stats").json()
    assert set(body["metrics"]) == {"train", "test"} and "map_at_r" in body["metrics"]["test"]
    per_class = body["stats"]["test"]["per_class"]
    assert len(per_class) == 2 and {"radius_mean", "density", "margin"} <= set(per_class[0])
    assert len(body["history"]) == 1 and body["summary"]["epochs"] == 1


def test_neighbours_by_image_id(trained: Trained) -> None:
    c, a = trained.client, trained.a
    test_ids = c.get(f"/api/runs/{a['id']}/points", params={"projection": "pca"}).json()["columns"]["image_id"]
    body = c.get(f"/api/runs/{a['id']}/neighbors", params={"image_id": test_ids[0], "k": 5}).json()
    assert body["query"]["image_id"] == test_ids[0] and body["query"]["split"] == "test"
    nbrs = body["neighbors"]
    assert len(nbrs) == 5 and [n["rank"] for n in nbrs] == [1, 2, 3, 4, 5]
    assert test_ids[0] not in [n["image_id"] for n in nbrs] and set(n["image_id"] for n in nbrs) <= set(test_ids)
    assert [n["distance"] for n in nbrs] == sorted(n["distance"] for n in nbrs)
    assert all(n["correct"] == (n["class"] == body["query"]["class"]) for n in nbrs)
    assert c.get(nbrs[0]["thumb_url"]).status_code == 200
    within = c.get(f"/api/runs/{a['id']}/neighbors", params={"image_id": test_ids[0], "k": 3, "within": "train"})
    assert all(n["image_id"] not in test_ids for n in within.json()["neighbors"])
    assert c.get(f"/api/runs/{a['id']}/neighbors", params={"image_id": 999}).status_code == 404
    assert c.get(f"/api/runs/{a['id']}/neighbors", params={"image_id": 0, "k": 0}).status_code == 422


def test_query_with_an_uploaded_image(trained: Trained) -> None:
    c, a = trained.client, trained.a
    image = c.get(f"/api/datasets/{trained.dataset['id']}/images/20").content
    cls = c.get(f"/api/runs/{a['id']}/neighbors", params={"image_id": 20}).json()["query"]["class"]
    body = c.post(f"/api/runs/{a['id']}/query", files={"file": ("q.png", image, "image/png")},
                  data={"k": "3", "class_name": cls}).json()
    assert body["query"]["image_id"] is None and len(body["neighbors"]) == 3
    assert body["neighbors"][0]["image_id"] == 20 and body["neighbors"][0]["correct"] is True  # itself, at ~0
    r = c.post(f"/api/runs/{a['id']}/query", files={"file": ("q.png", b"not an image", "image/png")})
    assert r.status_code == 400 and "query image" in r.json()["detail"]
    r = c.post(f"/api/runs/{a['id']}/query", files={"file": ("q.png", png_bytes(), "image/png")},
               data={"class_name": "unicorn"})
    assert r.status_code == 400 and "not a class" in r.json()["detail"]


def test_compare_two_runs(trained: Trained) -> None:
    body = trained.client.get("/api/compare", params={"a": trained.a["id"], "b": trained.b["id"], "k": 3,
                                                      "limit": 5}).json()
    assert body["a"]["id"] == trained.a["id"] and body["same_dataset"] is True
    m = body["metrics"]["test"]["map_at_r"]
    assert m["diff"] == pytest.approx(m["b"] - m["a"])
    assert {row["class"] for row in body["classes"]} == {n["name"] for n in trained.dataset["classes"][2:]}
    row = body["classes"][0]
    assert row["diff"]["radius_mean"] == pytest.approx(row["b"]["radius_mean"] - row["a"]["radius_mean"])
    changed = body["changed"]
    assert 0 < len(changed) <= 5 and [x["jaccard"] for x in changed] == sorted(x["jaccard"] for x in changed)
    assert all(len(x["a_neighbors"]) == 3 and 0.0 <= x["jaccard"] <= 1.0 for x in changed)
    assert trained.client.get("/api/compare", params={"a": trained.a["id"], "b": "nope"}).status_code == 422


def test_results_of_unfinished_runs_are_a_conflict(trained: Trained) -> None:
    store = trained.client.app.state.store
    failed = store.create_run(trained.dataset["id"], RunConfig.model_validate(trained.a["config"]), status="failed")
    for url in (f"/api/runs/{failed.id}/points", f"/api/runs/{failed.id}/stats",
                f"/api/runs/{failed.id}/export?what=embeddings", f"/api/compare?a={failed.id}&b={trained.a['id']}"):
        r = trained.client.get(url)
        assert r.status_code == 409 and "failed" in r.json()["detail"], url
    store.delete_run(failed.id)


def test_exports(trained: Trained) -> None:
    c, a = trained.client, trained.a
    r = c.get(f"/api/runs/{a['id']}/export", params={"what": "embeddings"})
    assert f"dmlscope-{a['id']}-embeddings.npz" in r.headers["content-disposition"]
    npz = np.load(io.BytesIO(r.content))
    assert npz["test"].shape == (16, 8) and npz["test_image_id"].shape == (16,) and len(npz["class_names"]) == 4
    stats_json = json.loads(c.get(f"/api/runs/{a['id']}/export", params={"what": "stats"}).content)
    assert stats_json["run"]["id"] == a["id"] and "test" in stats_json["stats"]
    csv_text = c.get(f"/api/runs/{a['id']}/export", params={"what": "stats", "format": "csv"}).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("class,split,count,radius_mean") and len(lines) == 1 + 4  # 2 classes × 2 splits
    assert c.get(f"/api/runs/{a['id']}/export", params={"what": "secrets"}).status_code == 422


def test_import_an_exported_checkpoint(trained: Trained) -> None:
    c, a = trained.client, trained.a
    ckpt = c.get(f"/api/runs/{a['id']}/export", params={"what": "checkpoint"})
    assert ckpt.status_code == 200
    assert torch.load(io.BytesIO(ckpt.content), weights_only=True)["format"] == 1
    r = c.post("/api/models/import", files={"file": ("base.pt", ckpt.content, "application/octet-stream")},
               data={"dataset_id": trained.dataset["id"], "name": "imported base"})
    assert r.status_code == 201, r.text
    run = wait_for(c, r.json()["id"], ("done", "failed"))
    assert run["status"] == "done", run
    assert run["origin"] == "import" and run["summary"]["origin"] == "import"
    # The same model on the same data measures the same.
    assert run["summary"]["test"]["map_at_r"] == pytest.approx(a["summary"]["test"]["map_at_r"])
    c.delete(f"/api/runs/{run['id']}")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is deprecated; users still have files
def test_import_refuses_code_and_junk(trained: Trained) -> None:
    c, ds = trained.client, trained.dataset["id"]
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    r = c.post("/api/models/import", files={"file": ("m.pt", scripted.getvalue(), "x")}, data={"dataset_id": ds})
    assert r.status_code == 400 and "allow_torchscript=true" in r.json()["detail"]
    for distance in ("mahalanobis", "relative_mahalanobis"):  # learned L / M estimated from training embeddings
        r = c.post("/api/models/import", files={"file": ("m.pt", scripted.getvalue(), "x")},
                   data={"dataset_id": ds, "allow_torchscript": "true", "distance": distance})
        detail = r.json()["detail"]
        assert r.status_code == 400 and "learned or estimated" in detail and "euclidean" in detail, distance
        assert "relative_mahalanobis" not in detail.split("choose one of")[1]
    pickle_bomb = io.BytesIO()
    torch.save({"format": 1, "payload": Image.new("L", (2, 2))}, pickle_bomb)  # an arbitrary Python object
    r = c.post("/api/models/import", files={"file": ("m.pt", pickle_bomb.getvalue(), "x")}, data={"dataset_id": ds})
    assert r.status_code == 400 and "not a readable dmlscope checkpoint" in r.json()["detail"]
    junk = io.BytesIO()
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("x.txt", "hello")
    r = c.post("/api/models/import", files={"file": ("m.pt", junk.getvalue(), "x")}, data={"dataset_id": ds})
    assert r.status_code == 400 and str(trained.data_dir) not in r.json()["detail"]
    r = c.post("/api/models/import", files={"file": ("m.pt", b"x", "x")}, data={"dataset_id": "../../etc"})
    assert r.status_code == 422
    assert [run["origin"] for run in c.get("/api/runs").json()["data"]].count("import") == 0


class _Embedder(torch.nn.Module):
    """A tiny image embedder: (B, C, H, W) float → (B, 3)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


class _Flattener(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)  # (B, C, H·W): not an embedding


def _import_scripted(trained: Trained, module: torch.nn.Module) -> Any:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return trained.client.post("/api/models/import", files={"file": ("emb.pt", buf.getvalue(), "x")},
                               data={"dataset_id": trained.dataset["id"], "allow_torchscript": "true"})


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_import_a_torchscript_embedder(trained: Trained) -> None:
    c = trained.client
    r = _import_scripted(trained, _Embedder(trained.dataset["channels"]))
    assert r.status_code == 201, r.text
    assert r.json()["origin"] == "import" and "trust" in r.json()["warnings"][0]
    run = wait_for(c, r.json()["id"], ("done", "failed"))
    assert run["status"] == "done", run
    summary = run["summary"]
    assert summary["model_format"] == "torchscript" and summary["embedding_dim"] == 3
    # One config: the database row (what GET shows) holds what was measured, and the folder's copy agrees.
    with sqlite3.connect(trained.data_dir / "dmlscope.sqlite3") as db:
        row = json.loads(db.execute("SELECT config FROM runs WHERE id = ?", (run["id"],)).fetchone()[0])
    folder = json.loads((trained.data_dir / "runs" / run["id"] / "config.json").read_text())
    assert run["config"] == row == folder
    assert row["embedding_dim"] == 3 and row["image_size"] == 16 and row["flow"]["enabled"] is False
    assert summary["flow"] is False and "input pixels" in summary["notes"][0]
    assert 0.0 <= summary["test"]["recall_at_1"] <= 1.0
    stats = c.get(f"/api/runs/{run['id']}/stats").json()
    assert set(stats["metrics"]) == {"train", "test"} and "map_at_r" in stats["metrics"]["test"]
    points = c.get(f"/api/runs/{run['id']}/points", params={"split": "test", "projection": "pca"}).json()
    assert points["count"] == summary["num_test"]
    assert points["columns"]["lipschitz"] is not None and points["columns"]["logdet"] is None
    # no dmlscope checkpoint: image queries and the checkpoint download say so instead of failing
    query = c.post(f"/api/runs/{run['id']}/query", files={"file": ("q.png", png_bytes(), "image/png")})
    assert query.status_code == 409 and "query it by image id" in query.json()["detail"]
    export = c.get(f"/api/runs/{run['id']}/export", params={"what": "checkpoint"})
    assert export.status_code == 409 and "export its embeddings instead" in export.json()["detail"]
    # a comparison needs no model, only each run's own distance: it works like for a trained run
    cmp = c.get("/api/compare", params={"a": trained.a["id"], "b": run["id"], "k": 3, "limit": 5})
    assert cmp.status_code == 200, cmp.text
    assert cmp.json()["same_dataset"] and 0 < len(cmp.json()["changed"]) <= 5
    c.delete(f"/api/runs/{run['id']}")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_that_is_not_an_embedder_fails_clearly(trained: Trained) -> None:
    c = trained.client
    wrong = {"channels": _Embedder(trained.dataset["channels"] + 1), "shape": _Flattener()}
    expected = {"channels": "failed on a float batch of shape", "shape": "must return one tensor of shape (B, D)"}
    for what, module in wrong.items():
        r = _import_scripted(trained, module)
        assert r.status_code == 201, r.text
        run = wait_for(c, r.json()["id"], ("done", "failed"))
        assert run["status"] == "failed" and expected[what] in run["error"], (what, run["error"])
        c.delete(f"/api/runs/{run['id']}")


def test_the_stats_exports_carry_the_per_class_metrics_by_class_name(trained: Trained) -> None:
    c, a = trained.client, trained.a
    metrics = c.get(f"/api/runs/{a['id']}/stats").json()["metrics"]
    csv_text = c.get(f"/api/runs/{a['id']}/export", params={"what": "stats", "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    names = [n["name"] for n in trained.dataset["classes"]]
    assert len(rows) == 4
    for row in rows:
        record = next(m for m in metrics[row["split"]]["per_class"] if m["label"] == names.index(row["class"]))
        for key in ("recall_at_1", "map_at_r", "r_precision"):
            assert row[key] != "" and float(row[key]) == pytest.approx(record[key]), (row, key)
    doc = json.loads(c.get(f"/api/runs/{a['id']}/export", params={"what": "stats"}).content)
    assert {r["name"] for s in ("train", "test") for r in doc["metrics"][s]["per_class"]} == set(names)


def test_export_answers_head(trained: Trained) -> None:
    for what in ("stats", "embeddings", "checkpoint"):
        r = trained.client.head(f"/api/runs/{trained.a['id']}/export", params={"what": what})
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"], what
