"""Runs over HTTP: validation, training in worker processes with SSE progress, retrain, cancel, queue limit,
a dying worker, deletion, and resuming after a server restart."""
from __future__ import annotations

import json

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.support.app import TINY_CONFIG, Trained, import_dataset, make_settings
from tests.support.polling import read_sse, wait_for, wait_until
from tests.support.zips import make_zip
from tests.support.workers import worker_pids

LONG_CONFIG = {**TINY_CONFIG, "epochs": 500, "steps_per_epoch": 20}


def _upload(client: TestClient) -> dict[str, Any]:
    return import_dataset(client, files={"file": ("shapes.zip", make_zip(), "application/zip")})


def test_config_errors_name_the_field(client: TestClient, dataset: dict[str, Any]) -> None:
    r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {"loss": {"name": "trplet"}}})
    assert r.status_code == 422 and r.json()["detail"].startswith("config")
    assert "triplet" in r.json()["detail"]  # the message lists what is allowed
    r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {"epochs": 0}})
    assert r.status_code == 422 and r.json()["detail"].startswith("config.epochs:")
    r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {"epochz": 3}})
    assert r.status_code == 422 and "epochz" in r.json()["detail"]
    r = client.post("/api/runs", json={"dataset_id": "0123456789ab", "config": {}})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get("/api/runs").json()["count"] == 0  # nothing was recorded


@pytest.mark.slow
def test_training_streams_progress_and_ends_with_a_terminal_event(trained: Trained) -> None:
    kinds = [kind for kind, _ in trained.events]
    assert kinds[0] == "run" and kinds[-1] == "end" and "progress" in kinds
    stages = {data["stage"] for kind, data in trained.events if kind == "progress"}
    assert "train" in stages and stages & {"embed", "evaluate", "stats", "project", "done"}
    train = next(data for kind, data in trained.events if kind == "progress" and data["stage"] == "train")
    assert {"epoch", "epochs", "step", "steps", "loss", "terms", "samples_per_s", "eta_s"} <= set(train)
    assert trained.events[-1][1]["status"] == "done"
    statuses = [data["status"] for kind, data in trained.events if kind == "run"]
    assert statuses[-1] == "done" and "running" in statuses
    a = trained.a
    assert a["summary"]["test"]["map_at_r"] is not None and a["progress"] is not None
    assert a["started_at"] and a["finished_at"] and a["error"] is None
    # A finished run's stream replays its state and ends at once.
    with trained.client.stream("GET", f"/api/runs/{a['id']}/events") as stream:
        assert [k for k, _ in read_sse(stream.iter_lines())] == ["run", "end"]


@pytest.mark.slow
def test_retrain_links_the_parent_and_merges_the_patch(trained: Trained) -> None:
    b = trained.b
    assert b["parent_id"] == trained.a["id"] and b["dataset_id"] == trained.dataset["id"] and b["name"] == "cosine + flow"
    assert b["config"]["distance"]["name"] == "cosine" and b["config"]["flow"]["enabled"] is True
    assert b["config"]["embedding_dim"] == TINY_CONFIG["embedding_dim"]  # untouched fields come from the parent
    r = trained.client.post(f"/api/runs/{trained.a['id']}/retrain", json={"patch": {"loss": {"name": "nope"}}})
    assert r.status_code == 422 and r.json()["detail"].startswith("patch")
    listed = trained.client.get("/api/runs", params={"dataset_id": trained.dataset["id"]}).json()
    assert [r["id"] for r in listed["data"]] == [b["id"], trained.a["id"]]
    assert trained.client.get("/api/runs", params={"status": "running"}).json()["count"] == 0


@pytest.mark.slow
def test_cancel_queue_limit_worker_death_and_delete(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "data", max_queued=1, cancel_grace_s=60))) as c:
        ds = _upload(c)
        long = c.post("/api/runs", json={"dataset_id": ds["id"], "config": LONG_CONFIG}).json()
        wait_until(lambda: c.get(f"/api/runs/{long['id']}").json()["status"] == "running", "the first run to start")
        queued = c.post("/api/runs", json={"dataset_id": ds["id"], "config": LONG_CONFIG}).json()
        assert queued["status"] == "queued"
        r = c.post("/api/runs", json={"dataset_id": ds["id"], "config": LONG_CONFIG})
        assert r.status_code == 503 and r.json()["error"] == "queue_full"
        assert c.get("/api/health").json()["queue"] == {"workers": 1, "running": 1, "queued": 1, "max_queued": 1}

        assert c.post(f"/api/runs/{queued['id']}/cancel").json()["status"] == "cancelled"
        assert c.post(f"/api/runs/{queued['id']}/cancel").status_code == 409
        assert c.delete(f"/api/runs/{long['id']}").status_code == 409  # still running
        assert c.delete(f"/api/datasets/{ds['id']}?force=true").status_code == 409

        wait_until(lambda: c.get(f"/api/runs/{long['id']}").json()["progress"], "training progress")
        r = c.post(f"/api/runs/{long['id']}/cancel").json()
        assert r["cancel_requested"] is True and r["status"] == "running"
        cancelled = wait_for(c, long["id"], ("cancelled", "failed"))
        assert cancelled["status"] == "cancelled", cancelled

        resumed = c.post(f"/api/runs/{long['id']}/resume").json()
        assert resumed["status"] == "queued" and resumed["error"] is None
        wait_until(lambda: c.get(f"/api/runs/{long['id']}").json()["status"] == "running", "the resumed run to start")
        worker = wait_until(lambda: worker_pids(long["id"]), "the worker process")[0]
        os.kill(worker, signal.SIGKILL)
        failed = wait_for(c, long["id"], ("failed",))
        assert "died without reporting" in failed["error"] and "SIGKILL" in failed["error"]

        assert c.post(f"/api/runs/{long['id']}/cancel").status_code == 409
        assert c.delete(f"/api/runs/{long['id']}").status_code == 204
        assert c.get(f"/api/runs/{long['id']}").status_code == 404
        assert not (tmp_path / "data" / "runs" / long["id"]).exists()


@pytest.mark.slow
def test_interrupted_by_a_restart_and_resumed_from_the_checkpoint(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    config = {**TINY_CONFIG, "epochs": 3, "steps_per_epoch": 40}
    with TestClient(create_app(settings)) as c:
        ds = _upload(c)
        run = c.post("/api/runs", json={"dataset_id": ds["id"], "config": config}).json()
        wait_until(lambda: (settings.data_dir / "runs" / run["id"] / "checkpoint.pt").exists(), "the first checkpoint")
    # The server stopped while the run was training.
    run_dir = settings.data_dir / "runs" / run["id"]
    saved = json.loads((run_dir / "history.json").read_text())  # the epochs its checkpoint holds
    with TestClient(create_app(settings)) as c:
        stopped = c.get(f"/api/runs/{run['id']}").json()
        assert stopped["status"] == "interrupted" and "resume" in stopped["error"]
        assert c.post(f"/api/runs/{run['id']}/resume").json()["status"] == "queued"
        with c.stream("GET", f"/api/runs/{run['id']}/events") as stream:
            events = list(read_sse(stream.iter_lines()))
        # Continued after the saved epoch, not from scratch: the saved epochs' records, wall-clock seconds
        # included, are kept as they were (a rerun from epoch 1 would write new ones). Progress events are
        # throttled to one per 0.25 s and an epoch here can take 0.2 s, so they may show no step at all.
        assert 1 <= len(saved) < 3
        assert json.loads((run_dir / "history.json").read_text())[:len(saved)] == saved
        steps = [d for k, d in events if k == "progress" and d["stage"] == "train" and d["step"]]
        assert all(d["epoch"] > len(saved) for d in steps)
        done = c.get(f"/api/runs/{run['id']}").json()
        assert done["status"] == "done" and done["summary"]["epochs"] == 3
        assert c.post(f"/api/runs/{run['id']}/resume").status_code == 409
