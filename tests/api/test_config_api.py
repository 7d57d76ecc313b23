"""/api/config/diff: the server owns the patch semantics the browser's compare, lineage and retrain views show;
and every config field's description reaches the schema the form is drawn from."""
from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from models.config import RunConfig


def test_diff_of_two_configs_is_the_retrain_patch_and_its_changes(client: TestClient) -> None:
    base = {"loss": {"name": "triplet", "params": {"margin": 0.3}}, "epochs": 2}
    config = {**base, "flow": {"enabled": True}, "regularizers": [{"name": "det", "weight": 0.05}],
              "loss": {"name": "triplet", "params": {}}}
    r = client.post("/api/config/diff", json={"base": base, "config": config})
    assert r.status_code == 200, r.text
    patch = r.json()["patch"]
    assert RunConfig.model_validate(base).with_patch(patch) == RunConfig.model_validate(config)
    assert [(c["path"], c["before"], c["after"]) for c in r.json()["changes"]] == [
        ("flow.enabled", False, True), ("loss.params", {"margin": 0.3}, {}),
        ("regularizers", [], [{"name": "det", "weight": 0.05, "params": {}}])]
    same = client.post("/api/config/diff", json={"base": base, "config": base}).json()
    assert same == {"patch": {}, "changes": []}


def test_an_invalid_config_is_a_422_naming_the_field(client: TestClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"base": {}, "config": {"flow": {"dueling": True}}}, "config.flow: flow.dueling: "),
        ({"base": {"epochz": 1}, "config": {}}, "base.epochz: Extra inputs are not permitted"),
        ({"base": {}, "config": {"optimizer": {"lr": -1}}}, "config.optimizer.lr: Input should be greater than 0"),
        ({"config": {}}, "base: Field required"),
    ]
    for body, detail in cases:
        r = client.post("/api/config/diff", json=body)
        assert r.status_code == 422 and r.json()["detail"].startswith(detail), (body, r.text)


def test_diff_of_two_runs_by_id(client: TestClient, dataset: dict[str, Any]) -> None:
    store = client.app.state.store
    a = store.create_run(dataset["id"], RunConfig(epochs=1), status="done")
    b = store.create_run(dataset["id"], RunConfig(epochs=1).with_patch({"distance": {"name": "cosine"}}),
                         status="failed", parent_id=a.id)
    r = client.get("/api/config/diff", params={"a": a.id, "b": b.id})
    assert r.status_code == 200, r.text
    assert r.json() == {"patch": {"distance": {"name": "cosine"}},
                        "changes": [{"path": "distance.name", "before": "euclidean", "after": "cosine"}]}
    assert client.get("/api/config/diff", params={"a": a.id, "b": "0123456789ab"}).status_code == 404
    r = client.get("/api/config/diff", params={"a": a.id, "b": "../etc"})
    assert r.status_code == 422 and r.json()["detail"].startswith("b:")


def test_the_form_schema_carries_every_description(client: TestClient) -> None:
    schema = client.get("/api/components").json()["run_config"]["schema"]
    assert schema["properties"]["samples_per_class"]["description"].startswith("K in the P×K batch")
    flow = schema["$defs"]["FlowConfig"]["properties"]
    assert all(p.get("description") for p in flow.values())


def test_run_and_sweep_requests_take_the_explicit_registry_check(client: TestClient, dataset: dict[str, Any]) -> None:
    """RunConfig itself no longer asks the registries; the request schemas do, with the same words."""
    for path in ("/api/runs", "/api/sweeps"):
        for config, detail in [({"loss": {"name": "trplet"}}, "config: loss.name: unknown loss 'trplet'"),
                               ({"loss": {"name": "proxy_anchor"}}, "config: miner.name: ")]:
            r = client.post(path, json={"dataset_id": dataset["id"], "config": config})
            assert r.status_code == 422 and r.json()["detail"].startswith(detail), (path, r.text)
    assert client.get("/api/runs").json()["count"] == 0
