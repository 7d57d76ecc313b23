"""The run lifecycle on its own (server/lifecycle.py), as a server worker and `dmlscope train` both use it:
progress and cancel requests travel through the store's row, and the run is concluded there."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from models.config import RunConfig
from models.progress import Cancelled, Progress, ignore_progress
from server import lifecycle
from server.imports import ensure_builtin
from server.store import RunRecord, Store
from tests.support.app import TINY_CONFIG, make_settings
from tests.support.polling import read_sse, wait_until


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(make_settings(tmp_path / "data"))
    yield s
    s.close()


def _running(store: Store) -> RunRecord:
    dataset = ensure_builtin(store, "synthetic")
    return lifecycle.record(store, dataset.id, RunConfig(**TINY_CONFIG), status="running")


def test_progress_is_numbered_in_the_row_and_the_latest_events_kept(store: Store) -> None:
    run = _running(store)
    report = lifecycle.StoreProgress(store, run.id)
    sent = [Progress(stage=("train", "embed")[i % 2], fraction=i / 40, step=i) for i in range(40)]
    for p in sent:  # every stage change is written, however soon after the last
        report(p)
    [(run_id, status, events)] = store.progress_logs([run.id])
    assert (run_id, status) == (run.id, "running")
    assert [seq for seq, _ in events] == list(range(40 - lifecycle.PROGRESS_LOG + 1, 41))
    assert [e for _, e in events] == [p.to_dict() for p in sent[-lifecycle.PROGRESS_LOG:]]
    assert store.get_run(run.id).progress == sent[-1].to_dict()
    store.set_status(run.id, "running")  # a new execution numbers its events from 1 again
    assert store.progress_logs([run.id]) == [(run.id, "running", [])]


def test_a_cancel_request_stops_the_run_and_is_recorded(store: Store) -> None:
    run = _running(store)
    cancel = lifecycle.StoreCancel(store, run.id)
    assert cancel() is False
    store.request_cancel(run.id)  # what POST /api/runs/{id}/cancel does, for a worker or a CLI run alike
    wait_until(cancel, "the cancel request to be seen")
    with pytest.raises(Cancelled):
        lifecycle.run_recorded(store, run.id, ignore_progress, cancel, cancelled_note="stopped")
    stopped = store.get_run(run.id)
    assert (stopped.status, stopped.error, stopped.summary) == ("cancelled", "stopped", None)
    assert not (store.run_dir(run.id) / "checkpoint.pt").exists()  # it stopped before its first step


def test_a_run_that_cannot_execute_is_concluded_failed_with_the_reason(store: Store) -> None:
    run = _running(store)
    shutil.rmtree(store.dataset_dir(run.dataset_id))  # its images vanished after it was recorded
    with pytest.raises(Exception) as raised:
        lifecycle.run_recorded(store, run.id, ignore_progress, lambda: False)
    failed = store.get_run(run.id)
    assert failed.status == "failed" and failed.finished_at
    assert failed.error.startswith(f"{type(raised.value).__name__}: ") and "Traceback" not in failed.error


def test_a_command_line_run_streams_and_is_cancelled_through_the_store(client: TestClient) -> None:
    store: Store = client.app.state.store
    run = _running(store)  # as `dmlscope train` records it, executing in its own process
    stages = ["train", "embed", "evaluate", "stats", "project", "done"]

    def execute() -> None:  # what the CLI's lifecycle writes while the browser watches
        report = lifecycle.StoreProgress(store, run.id)
        for i, stage in enumerate(stages):
            report(Progress(stage=stage, fraction=i / 5))
        store.set_summary(run.id, {"epochs": 1})
        store.set_status(run.id, "done")

    events: list[tuple[str, Any]] = []
    with client.stream("GET", f"/api/runs/{run.id}/events") as stream:
        for kind, data in read_sse(stream.iter_lines()):
            if not events:  # subscribed: the run now executes
                threading.Thread(target=execute).start()
            events.append((kind, data))
    assert [d["stage"] for k, d in events if k == "progress"] == stages  # every stage, in order
    assert [k for k, _ in events][-2:] == ["run", "end"] and events[-1][1]["status"] == "done"

    other = _running(store)
    cancelled = client.post(f"/api/runs/{other.id}/cancel").json()
    assert cancelled["status"] == "running" and cancelled["cancel_requested"] is True  # the CLI stops itself
    assert lifecycle.StoreCancel(store, other.id)() is True
