"""GET /api/run-groups: runs whose configs differ only in seed group together, with mean ± spread per metric."""
from __future__ import annotations

import statistics
from typing import Any

from fastapi.testclient import TestClient

from models.config import RunConfig
from tests.support.app import TINY_CONFIG


def _done(client: TestClient, dataset_id: str, summary_map: float, **changes: Any) -> str:
    """A finished run in the store with a test/train MAP@R (what a trained run's summary holds)."""
    store = client.app.state.store
    rec = store.create_run(dataset_id, RunConfig.model_validate({**TINY_CONFIG, **changes}), status="done")
    store.set_summary(rec.id, {"test": {"map_at_r": summary_map, "recall_at_1": 2 * summary_map},
                               "train": {"map_at_r": summary_map + 0.1}})
    return rec.id


def test_two_seeds_group_together_and_another_lr_does_not(client: TestClient, dataset: dict) -> None:
    ds = dataset["id"]
    s0 = _done(client, ds, 0.2, seed=0)
    s1 = _done(client, ds, 0.3, seed=1)
    other = _done(client, ds, 0.5, seed=0, optimizer={"lr": 0.01})
    assert RunConfig.model_validate(TINY_CONFIG).optimizer.lr != 0.01
    groups = client.get("/api/run-groups").json()["data"]
    assert sorted(len(g["run_ids"]) for g in groups) == [1, 2]
    pair = next(g for g in groups if len(g["run_ids"]) == 2)
    single = next(g for g in groups if len(g["run_ids"]) == 1)
    assert set(pair["run_ids"]) == {s0, s1} and single["run_ids"] == [other]
    assert pair["n"] == 2 and pair["seeds"] == [0, 1] and "seed" not in pair["config"]
    m = pair["metrics"]["map_at_r"]
    assert m["n"] == 2 and abs(m["mean"] - 0.25) < 1e-12 and abs(m["std"] - statistics.stdev([0.2, 0.3])) < 1e-12
    assert abs(pair["metrics"]["gap"]["mean"] - 0.1) < 1e-12
    assert single["metrics"]["map_at_r"]["std"] is None and single["metrics"]["margin"] == {"mean": None, "std": None, "n": 0}
    assert pair["config_key"] != single["config_key"]


def test_unfinished_runs_are_members_but_not_counted(client: TestClient, dataset: dict) -> None:
    ds = dataset["id"]
    _done(client, ds, 0.4, seed=0)
    client.app.state.store.create_run(ds, RunConfig.model_validate({**TINY_CONFIG, "seed": 3}), status="failed")
    [group] = client.get("/api/run-groups", params={"dataset_id": ds}).json()["data"]
    assert len(group["run_ids"]) == 2 and group["n"] == 1 and group["metrics"]["map_at_r"]["n"] == 1
    assert client.get("/api/run-groups", params={"dataset_id": "nope"}).status_code == 422
