"""Bad requests through the HTTP API: malformed bodies, impossible configs, unknown ids, path traversal in every
id parameter, runs a dataset cannot support, and a run that diverges.

Every answer is a 4xx with the one error shape and a detail that names what to fix; none is a 500, and none
records anything.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.support.app import TINY_CONFIG, Stored, api_routes, stored_app, upload_ready
from tests.support.images import class_files, solid
from tests.support.polling import wait_for
from tests.support.zips import make_zip, zip_of

MISSING_ID = "0123456789ab"
# Raw path segments (already URL-encoded as a client would send them): traversal, encodings, odd ids.
BAD_SEGMENTS = ["..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%5c..%5cwin.ini",
                "%252e%252e%252fetc", f"{MISSING_ID}%2f..%2f..", "%00", f"{MISSING_ID}%00", "ABCDEF012345",
                "0123456789abc", "-1", "%20", "*"]


@pytest.fixture(scope="module")
def trainable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stored, dict[str, Any]]]:
    """The stored app (a 3-class set) plus a 4-class set of 16-px shapes that runs can train on."""
    for stored in stored_app(tmp_path_factory.mktemp("requests") / "data"):
        yield stored, upload_ready(stored.client, make_zip(), "shapes.zip")


def _run_body(dataset_id: str, **config: Any) -> dict[str, Any]:
    return {"dataset_id": dataset_id, "config": {**TINY_CONFIG, **config}}


# (case, config fields merged into the tiny config, what the 422's detail must start with or hold)
BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", {"epochz": 3}, "config.epochz: Extra inputs are not permitted"),
    ("unknown nested field", {"optimizer": {"name": "adam", "learning_rate": 0.1}}, "config.optimizer.learning_rate"),
    ("negative epochs", {"epochs": -1}, "config.epochs: Input should be greater than or equal to 1"),
    ("huge epochs", {"epochs": 10 ** 9}, "config.epochs: Input should be less than or equal to 10000"),
    ("zero embedding", {"embedding_dim": 0}, "config.embedding_dim:"),
    ("huge embedding", {"embedding_dim": 10 ** 7}, "config.embedding_dim:"),
    ("huge images", {"image_size": 100_000}, "config.image_size:"),
    ("negative lr", {"optimizer": {"lr": -0.1}}, "config.optimizer.lr: Input should be greater than 0"),
    ("huge lr", {"optimizer": {"lr": 1e9}}, "config.optimizer.lr: Input should be less than or equal to 10"),
    ("negative regulariser weight", {"regularizers": [{"name": "det", "weight": -1}]}, "config.regularizers.0.weight"),
    ("negative margin", {"loss": {"name": "triplet", "params": {"margin": -5}}}, "config"),
    ("string for a number", {"epochs": "many"}, "config.epochs: Input should be a valid integer"),
    ("integer beyond 64 bits", {"seed": 10 ** 30}, "config.seed:"),
    ("negative split seed", {"split": {"mode": "random_half", "seed": -1}},
     "config.split.seed: Input should be greater than or equal to 0"),
    ("split seed beyond 32 bits", {"split": {"mode": "random_half", "seed": 2 ** 40}}, "config.split.seed:"),
    ("a name as long as a book", {"loss": {"name": "x" * 100_000}}, "config.loss.name: String should have at most 64"),
    ("too many regularizers", {"regularizers": [{"name": f"r{i}"} for i in range(100)]},
     "config.regularizers: List should have at most 16 items"),
    ("a hundred loss parameters", {"loss": {"name": "triplet", "params": {f"p{i}": 1 for i in range(100)}}},
     "config.loss.params: Dictionary should have at most 32 items"),
    ("a parameter name as long as a book", {"miner": {"name": "all", "params": {"m" * 100_000: 1}}},
     "m….[key]: String should have at most 64 characters"),
    ("a parameter value as long as a book", {"loss": {"name": "triplet", "params": {"margin": list(range(10 ** 5))}}},
     "config: loss.params.margin: expected a finite float, got [0, 1, 2"),
    ("server path for weights", {"pretrained_weights": "/etc/passwd"},
     "config: pretrained_weights: a local weights file can only be named from the command line"),
]


@pytest.mark.parametrize("case,config,message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configs_are_422_naming_the_field(trainable: tuple[Stored, dict[str, Any]], case: str,
                                              config: dict[str, Any], message: str) -> None:
    stored, shapes = trainable
    r = stored.client.post("/api/runs", json=_run_body(shapes["id"], **config))
    assert r.status_code == 422, (case, r.text)
    assert r.json()["error"] == "validation_error" and message in r.json()["detail"], (case, r.json()["detail"])
    assert len(r.text) < 2000, (case, len(r.text))  # a huge value is named, not echoed back
    assert stored.client.get("/api/runs").json()["count"] == 0


# (case, raw request body, what the detail must hold): what json.dumps would never write.
RAW_BODIES: list[tuple[str, str, str]] = [
    ("malformed JSON", '{"dataset_id": "%s", "config": {', "body: not valid JSON at character 42"),
    ("NaN learning rate", '{"dataset_id": "%s", "config": {"optimizer": {"lr": NaN}}}',
     "config.optimizer.lr: Input should be a finite number"),
    ("infinite learning rate", '{"dataset_id": "%s", "config": {"optimizer": {"lr": Infinity}}}',
     "config.optimizer.lr: Input should be a finite number"),
    ("NaN regularizer weight", '{"dataset_id": "%s", "config": {"regularizers": [{"name": "det", "weight": NaN}]}}',
     "config.regularizers.0.weight: Input should be a finite number"),
    ("NaN loss parameter", '{"dataset_id": "%s", "config": {"loss": {"name": "triplet", "params": {"margin": NaN}}}}',
     "config"),
    ("a list, not an object", '[1, 2, 3]', "Input should be a valid dictionary"),
    ("empty body", "", "body: Field required"),
]


@pytest.mark.parametrize("case,raw,message", RAW_BODIES, ids=[c[0] for c in RAW_BODIES])
def test_malformed_bodies_are_422(trainable: tuple[Stored, dict[str, Any]], case: str, raw: str, message: str) -> None:
    stored, shapes = trainable
    body = raw % shapes["id"] if "%s" in raw else raw
    r = stored.client.post("/api/runs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, (case, r.text)
    assert r.json()["error"] == "validation_error" and message in r.json()["detail"], (case, r.json()["detail"])
    assert stored.client.get("/api/runs").json()["count"] == 0


def _id_routes(client: TestClient) -> list[tuple[str, str, APIRoute]]:
    """(method, path template, route) for every route with a path parameter: a new one is tested too."""
    return [(method, path, route) for method, path, route in api_routes(client.app) if "{" in path]


def _fill(path: str, value: str) -> str:
    for name in ("dataset_id", "run_id", "image_id", "sweep_id", "weights_id"):
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"a new path parameter in {path}: add it here"
    return path


def test_every_id_parameter_refuses_traversal_and_odd_ids(stored: Stored) -> None:
    routes = _id_routes(stored.client)
    assert len(routes) >= 15
    before = stored.snapshot()
    for method, path, _ in routes:
        for segment in BAD_SEGMENTS:
            r = stored.client.request(method, _fill(path, segment))
            assert r.status_code in (404, 405, 422), (method, path, segment, r.status_code, r.text)
            # 405: the decoded path matched another route's template with another method; HEAD has no body
            if r.status_code != 405 and method != "HEAD":
                assert set(r.json()) >= {"error", "detail"}, (method, path, segment)
    assert stored.snapshot() == before


def test_every_id_parameter_answers_404_for_a_missing_id(stored: Stored) -> None:
    for method, path, _ in _id_routes(stored.client):
        r = stored.client.request(method, _fill(path, MISSING_ID).replace(f"images/{MISSING_ID}", "images/0"))
        assert r.status_code in (404, 422), (method, path, r.status_code, r.text)
        # 422: a required query or body part is missing; the id itself was well-formed (HEAD: no body to read)
        if r.status_code == 422 and method != "HEAD":
            assert all(f["loc"][0] != "path" for f in r.json()["fields"]), (method, path, r.text)
    image = f"/api/datasets/{stored.dataset['id']}/images/{10 ** 20}"
    assert stored.client.get(image).status_code in (404, 422)


@pytest.mark.parametrize("url", [
    "/api/runs?dataset_id=..%2F..%2Fetc", "/api/runs?status=..%2Fdone", "/api/compare?a=..%2F..&b=%2e%2e",
    f"/api/compare?a={MISSING_ID}&b=..%2F{MISSING_ID}", f"/api/runs/{MISSING_ID}/export?what=..%2F..%2Fetc%2Fpasswd",
    f"/api/runs/{MISSING_ID}/points?split=..%2Ftest", f"/api/runs/{MISSING_ID}/neighbors?image_id=..%2F1",
    f"/api/runs/{MISSING_ID}/neighbors?image_id=-1", "/api/datasets/{dataset}/images?class_name=..%2F..%2Fclass0",
    "/api/datasets/{dataset}/images?limit=1000000", "/api/datasets/{dataset}/images?offset=-5",
])
def test_query_parameters_refuse_traversal_and_out_of_range_values(stored: Stored, url: str) -> None:
    r = stored.client.get(url.replace("{dataset}", stored.dataset["id"]))
    assert r.status_code in (404, 422), (url, r.status_code, r.text)
    assert r.json()["error"] in ("not_found", "validation_error") and r.json()["detail"]


def test_runs_a_dataset_cannot_support_are_refused_before_queueing(trainable: tuple[Stored, dict[str, Any]]) -> None:
    stored, shapes = trainable
    three = stored.dataset  # imports fine with 3 classes, but a zero-shot split needs 2 + 2
    assert three["num_classes"] == 3
    r = stored.client.post("/api/runs", json=_run_body(three["id"]))
    assert r.status_code == 400 and "needs 4 or more classes (it has 3)" in r.json()["detail"], r.text
    r = stored.client.post("/api/runs", json={"dataset_id": shapes["id"], "config": {"epochs": 1}})  # P = 5 > 2
    assert r.status_code == 400 and "set classes_per_batch to at most 2" in r.json()["detail"], r.text
    r = stored.client.post("/api/runs", json=_run_body(shapes["id"], split={"mode": "predefined"}))
    assert r.status_code == 400 and "no predefined split" in r.json()["detail"], r.text
    mixed = upload_ready(stored.client, zip_of(class_files(4, 2) + [("class0/big.png", solid(0, (20, 12)))]))
    assert mixed["native_size"] is None
    r = stored.client.post("/api/runs", json=_run_body(mixed["id"], image_size=None))
    assert r.status_code == 400 and "different sizes; set image_size" in r.json()["detail"], r.text
    assert stored.client.get("/api/runs").json()["count"] == 0


@pytest.mark.slow
def test_a_diverging_run_fails_cleanly_and_keeps_its_last_good_checkpoint(
        trainable: tuple[Stored, dict[str, Any]]) -> None:
    """SGD at lr 10 with momentum 0.99 blows up the embedding norms at epoch 4 (seeded, so always there)."""
    from models.checkpoint import load_checkpoint

    stored, shapes = trainable
    config = {"epochs": 30, "steps_per_epoch": 1, "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.99},
              "loss": {"name": "contrastive"}, "regularizers": [{"name": "l2_embedding", "weight": 1.0}]}
    r = stored.client.post("/api/runs", json=_run_body(shapes["id"], **config))
    assert r.status_code == 201, r.text
    run = wait_for(stored.client, r.json()["id"], ("failed", "done"))
    assert run["status"] == "failed", run
    assert "training diverged at epoch 4" in run["error"] and "lower the learning rate" in run["error"]
    checkpoint = load_checkpoint(stored.settings.data_dir / "runs" / run["id"] / "checkpoint.pt")
    assert checkpoint["epoch"] == 3 and len(checkpoint["history"]) == 3
    assert stored.client.get(f"/api/runs/{run['id']}/stats").status_code == 409  # no results to explore

    # A retrain of it cannot name a server file either, nor ask for a split the set does not have.
    r = stored.client.post(f"/api/runs/{run['id']}/retrain", json={"patch": {"pretrained_weights": "/etc/passwd"}})
    assert r.status_code == 422 and "pretrained_weights" in r.json()["detail"], r.text
    r = stored.client.post(f"/api/runs/{run['id']}/retrain", json={"patch": {"split": {"mode": "predefined"}}})
    assert r.status_code == 400 and "no predefined split" in r.json()["detail"], r.text
    r = stored.client.post(f"/api/runs/{run['id']}/retrain", json={"patch": {"split": {"seed": -1}}})
    assert r.status_code == 422 and r.json()["detail"].startswith("patch.split.seed"), r.text
    assert stored.client.get("/api/runs").json()["count"] == 1  # nothing was recorded for the refused retrains
