"""The analysis endpoints over HTTP: failures, class pairs and selections of a finished run (docs/api.md)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.app import Trained

pytestmark = pytest.mark.slow  # every test explores the session-wide `trained` runs (spawned workers)


def _points(trained: Trained, run: dict, split: str = "test") -> dict:
    return trained.client.get(f"/api/runs/{run['id']}/points", params={"split": split, "projection": "pca"}).json()


def test_failures_are_the_wrong_at_1_images_worst_margin_first(trained: Trained) -> None:
    c, a = trained.client, trained.a
    cols = _points(trained, a)["columns"]
    wrong = {i for i, ok in zip(cols["image_id"], cols["correct_at_1"]) if not ok}
    body = c.get(f"/api/runs/{a['id']}/failures", params={"split": "test", "limit": 100}).json()
    assert body["count"] == len(wrong) and body["total"] == 16
    got = body["failures"]
    assert {f["image_id"] for f in got} == wrong
    margins = [f["margin"] for f in got]
    assert margins == sorted(margins) and all(m <= 1e-6 for m in margins)
    for f in got:
        assert f["neighbors"][0]["correct"] is False and f["neighbors"][0]["distance"] == pytest.approx(
            f["nearest_other"], rel=1e-4)
        assert f["margin"] == pytest.approx(f["nearest_other"] - f["farthest_mate"], abs=1e-6)
        assert f["lipschitz"] is not None and f["logdet"] is None  # run a: no flow layer
    r = c.get(f"/api/runs/{a['id']}/failures", params={"sort": "logdet"})
    assert r.status_code == 400 and "flow layer" in r.json()["detail"]
    if len(got) > 1:
        by_lip = c.get(f"/api/runs/{a['id']}/failures", params={"sort": "lipschitz"}).json()["failures"]
        assert [f["lipschitz"] for f in by_lip] == sorted((f["lipschitz"] for f in by_lip), reverse=True)
    assert len(c.get(f"/api/runs/{a['id']}/failures", params={"limit": 1}).json()["failures"]) == min(1, len(wrong))


def test_failures_sorted_by_logdet_on_a_flow_run(trained: Trained) -> None:
    body = trained.client.get(f"/api/runs/{trained.b['id']}/failures",
                              params={"split": "train", "sort": "logdet"}).json()
    values = [f["logdet"] for f in body["failures"]]
    assert all(v is not None for v in values) and values == sorted(values, reverse=True)


def test_class_pairs_gap_matrix_and_confusion(trained: Trained) -> None:
    c, a = trained.client, trained.a
    body = c.get(f"/api/runs/{a['id']}/class-pairs", params={"split": "test"}).json()
    test_classes = {n["name"] for n in trained.dataset["classes"][2:]}
    assert set(body["classes"]) == test_classes and len(body["classes"]) == 2
    gap = np.array(body["gap"], dtype=float)
    assert np.isnan(np.diag(gap)).all() and np.allclose(gap, gap.T, equal_nan=True)
    stats = c.get(f"/api/runs/{a['id']}/stats").json()["stats"]["test"]["global"]
    assert np.nanmin(gap) == pytest.approx(stats["delta2"], rel=1e-4)  # δ2 is the smallest class-pair gap
    confusion = np.array(body["confusion"])
    assert confusion.sum(axis=1).tolist() == [body["k"] * 8] * 2  # 8 test images per class, k neighbours each
    cols = _points(trained, a)["columns"]
    assert confusion.trace() >= sum(cols["correct_at_1"])  # every right first neighbour is on the diagonal
    assert c.get(f"/api/runs/{a['id']}/class-pairs", params={"split": "both"}).status_code == 422


def test_selection_statistics(trained: Trained) -> None:
    c, a = trained.client, trained.a
    body = _points(trained, a)
    cols, names = body["columns"], body["class_names"]
    first = cols["label"][0]
    ids = [i for i, lab in zip(cols["image_id"], cols["label"]) if lab == first]
    r = c.post(f"/api/runs/{a['id']}/selection", json={"image_ids": ids})
    assert r.status_code == 200, r.text
    sel = r.json()
    assert sel["split"] == "test" and sel["size"] == 8 and sel["rest_size"] == 8
    assert sel["classes"] == [{"class": names[first], "count": 8, "total": 8}]
    ok = np.array(cols["correct_at_1"])[np.array(cols["label"]) == first].mean()
    assert sel["correct_at_1"]["selection"] == pytest.approx(ok)
    assert 0 <= sel["knn_inside"] <= 1 and sel["expected"] == pytest.approx(7 / 15)
    assert sel["radius_mean"]["selection"] > 0 and sel["lipschitz"]["selection"] is not None
    both = c.post(f"/api/runs/{a['id']}/selection", json={"image_ids": [ids[0], 0]}).json()
    assert both["split"] == "all" and both["size"] == 2 and both["rest_size"] == 30
    r = c.post(f"/api/runs/{a['id']}/selection", json={"image_ids": [ids[0], 9999]})
    assert r.status_code == 400 and "9999" in r.json()["detail"]
    assert c.post(f"/api/runs/{a['id']}/selection", json={"image_ids": []}).status_code == 422


def test_history_of_a_run_in_any_status(trained: Trained) -> None:
    from models.config import RunConfig

    c, a = trained.client, trained.a
    body = c.get(f"/api/runs/{a['id']}/history").json()
    assert body["status"] == "done" and body["epochs"] == 1 and body["checkpoint_epoch"] == 1
    assert [h["epoch"] for h in body["history"]] == [1] and "loss" in body["history"][0]["terms"]
    store = c.app.state.store
    queued = store.create_run(trained.dataset["id"], RunConfig.model_validate(a["config"]), status="cancelled")
    body = c.get(f"/api/runs/{queued.id}/history").json()
    assert body == {"run_id": queued.id, "status": "cancelled", "epochs": 1, "checkpoint_epoch": None, "history": []}
    store.delete_run(queued.id)
    assert c.get("/api/runs/0123456789ab/history").status_code == 404
