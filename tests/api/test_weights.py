"""Uploaded backbone weights: POST/GET/DELETE /api/weights, checked on upload (weights_only, fits the named
backbone), chosen by id in a run config and loaded by the worker; a server path never comes from a request."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from fastapi.testclient import TestClient

from models.runfolder import CHECKPOINT
from tests.support.app import TINY_CONFIG
from tests.support.polling import wait_for


def _resnet18_file(seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    """An ImageNet-classifier-shaped resnet18 state_dict (head included, as published) with distinctive values."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1, 1)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue(), net.state_dict()


def _upload(client: TestClient, data: bytes, backbone: str, name: str | None = None) -> Any:
    form = {"backbone": backbone, **({"name": name} if name else {})}
    return client.post("/api/weights", files={"file": ("r18.pth", data, "application/octet-stream")}, data=form)


@pytest.mark.slow
def test_upload_list_choose_train_and_delete(client: TestClient, dataset: dict[str, Any], settings: Any) -> None:
    data, state = _resnet18_file()
    r = _upload(client, data, "resnet18", name="my resnet18")
    assert r.status_code == 201, r.text
    weights = r.json()
    assert weights["name"] == "my resnet18" and weights["backbone"] == "resnet18" and weights["channels"] == 3
    assert client.get("/api/weights").json()["data"] == [weights]
    assert (settings.data_dir / "weights" / f"{weights['id']}.pt").is_file()

    config = {**TINY_CONFIG, "backbone": "resnet18", "image_size": 32, "weights_id": weights["id"],
              "optimizer": {"name": "adam", "lr": 1e-7}}
    r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": config})
    assert r.status_code == 201, r.text
    run = wait_for(client, r.json()["id"], ("done", "failed"))
    assert run["status"] == "done", run["error"]
    assert run["config"]["weights_id"] == weights["id"] and run["config"]["pretrained_weights"] is None
    ckpt = torch.load(settings.data_dir / "runs" / run["id"] / CHECKPOINT, weights_only=True)
    # started from the uploaded file: two steps at lr 1e-7 move a weight by well under 1e-5
    assert torch.allclose(ckpt["model"]["backbone.layer2.0.conv1.weight"], state["layer2.0.conv1.weight"], atol=1e-5)

    r = client.delete(f"/api/weights/{weights['id']}")
    assert r.status_code == 204
    assert client.get("/api/weights").json()["count"] == 0
    assert client.get(f"/api/weights/{weights['id']}").status_code == 404


def test_a_file_for_another_backbone_is_refused_naming_the_keys(client: TestClient) -> None:
    data, _ = _resnet18_file()
    r = _upload(client, data, "resnet50")
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "does not fit this backbone" in detail and "shape mismatches" in detail
    assert "/tmp" not in detail  # the server's temp path is not echoed
    r = _upload(client, data, "no_such_net")
    assert r.status_code == 400 and "unknown backbone 'no_such_net'" in r.json()["detail"]
    assert client.get("/api/weights").json()["count"] == 0


def test_a_pickle_that_would_run_code_is_refused(client: TestClient, tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    buf = io.BytesIO()
    torch.save({"x": Boom()}, buf, pickle_module=pickle)
    r = _upload(client, buf.getvalue(), "resnet18")
    assert r.status_code == 400 and "not a plain state_dict" in r.json()["detail"]
    r = _upload(client, b"not torch at all", "resnet18")
    assert r.status_code == 400 and "state_dict" in r.json()["detail"]
    r = client.post("/api/weights", data={"backbone": "resnet18"})
    assert r.status_code == 422 and "file" in r.text


def test_a_run_must_choose_an_existing_file_for_its_backbone(client: TestClient, dataset: dict[str, Any]) -> None:
    weights = _upload(client, _resnet18_file()[0], "resnet18").json()
    for config, expected in (({"weights_id": "0123456789ab"}, "do not exist"),
                             ({"weights_id": weights["id"]}, "holds resnet18 weights, but the config's backbone is "
                                                             "small_cnn"),
                             ({"weights_id": weights["id"], "backbone": "resnet18", "pretrained": "imagenet"},
                              "exclude each other")):
        r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {**TINY_CONFIG, **config}})
        assert r.status_code in (400, 422) and expected in r.text, r.text
    r = client.post("/api/runs", json={"dataset_id": dataset["id"],
                                       "config": {**TINY_CONFIG, "weights_id": "../../etc/passwd"}})
    assert r.status_code == 422


@pytest.mark.slow
def test_offline_imagenet_fails_the_run_with_what_to_do(client: TestClient, dataset: dict[str, Any], tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    # the worker process inherits this environment: an empty torch cache, downloads refused by a closed port
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    config = {**TINY_CONFIG, "backbone": "resnet18", "image_size": 32, "pretrained": "imagenet", "freeze_bn": True}
    r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": config})
    assert r.status_code == 201, r.text
    run = wait_for(client, r.json()["id"], ("done", "failed"))
    assert run["status"] == "failed"
    assert "could not download the ImageNet weights of resnet18" in run["error"]
    assert "POST /api/weights" in run["error"] and str(tmp_path / "torch") in run["error"]
