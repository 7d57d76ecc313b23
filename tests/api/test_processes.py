"""Runs in several processes from the server: `processes` in a run request, checked against the machine, executed
under torchrun (gloo on CPU), recorded once, streamed, cancelled with every process, resumed in one process."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.executor import SERVER_PID_ENV, resolve_processes, worker_env
from server.settings import Settings
from tests.support.app import TINY_CONFIG, import_dataset, make_settings
from tests.support.polling import read_sse, wait_for, wait_until
from tests.support.workers import worker_pids
from tests.support.zips import make_zip


def _dataset(client: TestClient) -> str:
    return import_dataset(client, files={"file": ("shapes.zip", make_zip(), "application/zip")})["id"]


def test_processes_are_checked_against_the_machine(client: TestClient, dataset: dict[str, Any]) -> None:
    cpus, gpus = (client.get("/api/health").json()[k] for k in ("cpus", "gpus"))
    assert cpus >= 1 and gpus == 0  # the test settings hide GPUs (device cpu)

    def create(processes: Any, **config: Any) -> Any:
        return client.post("/api/runs", json={"dataset_id": dataset["id"], "processes": processes,
                                              "config": {**TINY_CONFIG, **config}})

    r = create(cpus + 1)
    assert r.status_code == 400 and f"({cpus} CPU core(s))" in r.json()["detail"], r.text
    r = create(2, device="cuda")  # one GPU per process, and there is none
    assert r.status_code == 400 and "0 visible GPU(s)" in r.json()["detail"], r.text
    assert create(0).status_code == 422 and create("all").status_code == 422
    if cpus >= 3:  # a batch of 2 × 4 images does not split over 3 processes
        r = create(3)
        assert r.status_code == 400 and "does not split evenly over 3 processes" in r.json()["detail"], r.text
    assert client.get("/api/runs").json()["count"] == 0  # nothing refused was recorded
    settings = make_settings(Path("unused"))
    for device in ("auto", "cpu", "cuda"):  # "auto": every visible GPU, and one process without a GPU
        assert resolve_processes("auto", device, 8, settings) == 1
    assert resolve_processes(1, "cpu", 9, settings) == 1


def test_a_worker_reads_the_servers_settings_from_its_environment(tmp_path: Path, monkeypatch) -> None:
    """Settings given to the server as arguments, not in its environment, still reach the worker."""
    settings = make_settings(tmp_path / "data", database_url=f"sqlite:///{tmp_path}/elsewhere.db", torch_threads=3)
    env = worker_env(settings)
    for name in [n for n in os.environ if n.startswith("DMLSCOPE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("DMLSCOPE_"):
            monkeypatch.setenv(name, value)
    seen = Settings(data_dir=settings.data_dir)  # what server/worker.py builds
    assert (seen.database_path, seen.device, seen.torch_threads) == (tmp_path / "elsewhere.db", "cpu", 3)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env[SERVER_PID_ENV] == str(os.getpid())


@pytest.mark.slow
def test_two_cpu_processes_train_once_stream_cancel_and_resume_in_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", cancel_grace_s=60)
    with TestClient(create_app(settings)) as c:
        if c.get("/api/health").json()["cpus"] < 2:
            pytest.skip("two CPU processes need two cores")
        ds = _dataset(c)
        # Trained to the end under torchrun: rank 0 records and measures, rank 1 trains in step and writes nothing.
        r = c.post("/api/runs", json={"dataset_id": ds, "config": TINY_CONFIG, "processes": 2})
        assert r.status_code == 201 and r.json()["processes"] == 2, r.text
        with c.stream("GET", f"/api/runs/{r.json()['id']}/events") as stream:
            events = list(read_sse(stream.iter_lines()))
        done = events[-1][1]
        assert events[-1][0] == "end" and done["status"] == "done" and done["summary"]["epochs"] == 1, done
        assert "train" in {data["stage"] for kind, data in events if kind == "progress"}

        # A longer one, cancelled in its second epoch: every process of it stops.
        config = {**TINY_CONFIG, "epochs": 2, "steps_per_epoch": 500}
        run = c.post("/api/runs", json={"dataset_id": ds, "config": config, "processes": 2}).json()
        with c.stream("GET", f"/api/runs/{run['id']}/events") as stream:
            events: list[tuple[str, Any]] = []
            for kind, data in read_sse(stream.iter_lines()):
                events.append((kind, data))
                second_epoch = kind == "progress" and data["stage"] == "train" and data["epoch"] == 2
                if second_epoch and ("cancel", None) not in events:
                    processes = worker_pids(run["id"])
                    assert len(processes) == 3, processes  # torchrun's agent and two ranks
                    assert c.post(f"/api/runs/{run['id']}/cancel").json()["cancel_requested"] is True
                    events.append(("cancel", None))
        assert events[-1][0] == "end" and events[-1][1]["status"] == "cancelled", events[-1]
        assert ("cancel", None) in events
        wait_until(lambda: not worker_pids(run["id"]), "every process of the cancelled run to exit")

        runs = c.get("/api/runs").json()["data"]  # each recorded once: one row and one folder per run
        assert sorted(r["id"] for r in runs) == sorted([done["id"], run["id"]])
        assert sorted(p.name for p in (settings.data_dir / "runs").iterdir()) == sorted([done["id"], run["id"]])
        history = json.loads((settings.data_dir / "runs" / run["id"] / "history.json").read_text())
        assert len(history) == 1  # the first epoch, saved by rank 0

        # Resumed from that checkpoint in one process.
        resumed = c.post(f"/api/runs/{run['id']}/resume", json={"processes": 1}).json()
        assert resumed["status"] == "queued" and resumed["processes"] == 1, resumed
        finished = wait_for(c, run["id"], ("done", "failed"), timeout=300)
        assert finished["status"] == "done" and finished["summary"]["epochs"] == 2, finished
        assert json.loads((settings.data_dir / "runs" / run["id"] / "history.json").read_text())[:1] == history
        assert c.post(f"/api/runs/{run['id']}/resume", json={"processes": 2}).status_code == 409  # it is done
