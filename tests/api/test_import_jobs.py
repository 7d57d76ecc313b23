"""Imports are jobs: POST /api/datasets answers 202 and a worker imports the upload, with progress events and
cancel; the dataset ends `ready` or `failed` with why; a dataset that is not ready cannot be used (409); a
cancelled import leaves nothing behind, and one the server stopped is marked failed at the next start.

The tests that need an import to stay in progress run it here, as the CLI would (the same `execute_import`
over the same data folder), held between two files; the server follows it like its own workers' imports.
"""
from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from models.data import import_zip
from models.progress import Cancelled
from server.app import create_app
from server.imports import execute_import
from server.store import Store
from tests.support.app import TINY_CONFIG, make_settings
from tests.support.images import class_files
from tests.support.polling import read_sse, wait_until
from tests.support.zips import make_zip, zip_of


def _leftovers(data_dir: Path) -> list[str]:
    """Everything under datasets/ and tmp/: an import's folder, partial folder or upload."""
    return sorted(str(p.relative_to(data_dir)) for sub in ("datasets", "tmp") for p in (data_dir / sub).iterdir())


class Held:
    """An import running in a thread of this process, stopped after its first file until `release()`."""

    def __init__(self, store: Store, data: bytes):
        self.store, self.gate, self.error = store, threading.Event(), None
        self.rec = store.begin_import("held", "zip")
        upload = store.upload_path(self.rec.id)
        upload.write_bytes(data)

        def build(dest: Path, on_file: Any) -> Any:
            def held(done: int, total: int) -> None:
                on_file(done, total)
                if done == 1:
                    self.gate.wait(60)

            return import_zip(upload, dest, store.upload_limits(), on_file=held)

        def run() -> None:
            try:
                execute_import(store, self.rec.id, build)
            except Cancelled as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.gate.set()
        self.thread.join(60)


@pytest.fixture
def held(client: TestClient) -> Iterator[Held]:
    h = Held(client.app.state.store, make_zip())
    wait_until(lambda: client.get(f"/api/datasets/{h.rec.id}").json()["progress"], "the first file's progress")
    yield h
    h.release()


@pytest.fixture(params=["thread", pytest.param("process", marks=pytest.mark.slow)])
def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """An app importing in a thread, and one importing in worker processes (the server's default)."""
    with TestClient(create_app(make_settings(tmp_path / "data", import_executor=request.param))) as c:
        yield c


def test_an_upload_is_answered_202_importing_and_streams_until_ready(any_client: TestClient, tmp_path: Path) -> None:
    client = any_client
    r = client.post("/api/datasets", files={"file": ("shapes.zip", make_zip(), "application/zip")})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["state"] == "importing" and accepted["num_images"] == 0 and accepted["error"] is None
    with client.stream("GET", f"/api/datasets/{accepted['id']}/events") as stream:
        events = list(read_sse(stream.iter_lines()))
    (end_kind, end), (last_kind, last) = events[-1], events[-2]
    assert (last_kind, end_kind) == ("dataset", "end") and end == last and end["state"] == "ready", events
    assert all(d["state"] == "importing" for k, d in events[:-2] if k == "dataset"), events
    fractions = [d["fraction"] for k, d in events if k == "progress"]
    assert fractions == sorted(fractions) and all(0 < f <= 1 for f in fractions), fractions
    ready = client.get(f"/api/datasets/{accepted['id']}").json()
    assert ready == end and ready["num_images"] == 32 and ready["progress"] is None
    assert _leftovers(tmp_path / "data") == [f"datasets/{accepted['id']}"]  # the upload is gone


def test_the_events_show_an_import_in_progress_and_its_end(client: TestClient, held: Held) -> None:
    with client.stream("GET", f"/api/datasets/{held.rec.id}/events") as stream:
        events = read_sse(stream.iter_lines())
        kind, first = next(events)
        assert kind == "dataset" and first["state"] == "importing"
        kind, progress = next(events)
        assert kind == "progress" and progress["stage"] == "import", progress
        assert (progress["step"], progress["steps"], progress["fraction"]) == (1, 32, 1 / 32), progress
        held.release()
        rest = list(events)
    assert [k for k, _ in rest[-2:]] == ["dataset", "end"] and rest[-1][1]["state"] == "ready", rest
    assert all(k == "progress" and 1 / 32 < d["fraction"] <= 1 for k, d in rest[:-2]), rest


def test_a_dataset_that_is_not_ready_refuses_to_be_used(client: TestClient, held: Held) -> None:
    ds = held.rec.id
    r = client.post("/api/runs", json={"dataset_id": ds, "config": TINY_CONFIG})
    assert r.status_code == 409 and f"dataset {ds} is still importing (3% done)" in r.json()["detail"], r.text
    assert client.get(f"/api/datasets/{ds}/images").status_code == 409
    r = client.delete(f"/api/datasets/{ds}")
    assert r.status_code == 409 and f"POST /api/datasets/{ds}/cancel" in r.json()["detail"], r.text
    assert client.get("/api/runs").json()["count"] == 0
    listed = client.get("/api/datasets").json()["data"]
    assert [(d["id"], d["state"]) for d in listed] == [(ds, "importing")]


def test_cancelling_an_import_in_another_process_stops_it_at_its_next_file(client: TestClient, held: Held,
                                                                           settings: Any) -> None:
    r = client.post(f"/api/datasets/{held.rec.id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    held.release()
    assert isinstance(held.error, Cancelled)
    assert client.get(f"/api/datasets/{held.rec.id}").status_code == 404
    assert _leftovers(settings.data_dir) == []


@pytest.mark.slow
def test_cancelling_a_worker_process_import_leaves_nothing_behind(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", import_executor="process")
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/datasets", files={"file": ("big.zip", make_zip(8, 40, 32), "application/zip")})
        assert r.status_code == 202, r.text
        ds = r.json()["id"]
        r = client.post(f"/api/datasets/{ds}/cancel")  # while the worker is still starting or decoding
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        assert not [p for p in multiprocessing.active_children() if p.name == f"dmlscope-import-{ds}"]
        assert client.get(f"/api/datasets/{ds}").status_code == 404
        assert client.get("/api/datasets").json()["count"] == 0
        assert _leftovers(settings.data_dir) == []  # no record, no folder, no partial folder, no upload
        r = client.post(f"/api/datasets/{ds}/cancel")
        assert r.status_code == 404


def test_only_an_import_in_progress_can_be_cancelled(client: TestClient, dataset: dict[str, Any]) -> None:
    r = client.post(f"/api/datasets/{dataset['id']}/cancel")
    assert r.status_code == 409 and "is ready; only an import in progress can be cancelled" in r.json()["detail"]


def test_a_failed_import_says_why_and_can_be_deleted(client: TestClient, settings: Any) -> None:
    junk = zip_of(class_files(1, 3) + [("x/a.png", b"text"), ("x/b.png", b"text")])  # one usable class
    r = client.post("/api/datasets", files={"file": ("junk.zip", junk, "application/zip")})
    assert r.status_code == 202, r.text
    with client.stream("GET", f"/api/datasets/{r.json()['id']}/events") as stream:
        kind, failed = list(read_sse(stream.iter_lines()))[-1]
    assert kind == "end" and failed["state"] == "failed", failed
    assert "found 1 ('class0')" in failed["error"] and "'x/a.png': not an image" in failed["error"]
    assert failed["num_images"] == 0
    assert _leftovers(settings.data_dir) == []
    r = client.post("/api/runs", json={"dataset_id": failed["id"], "config": TINY_CONFIG})
    assert r.status_code == 409 and "failed to import" in r.json()["detail"]
    assert client.delete(f"/api/datasets/{failed['id']}").status_code == 204


def test_an_import_the_server_stopped_is_marked_failed_and_emptied_at_the_next_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings)  # a server killed mid-import left: the record, the upload, a partial folder
    rec = store.begin_import("cut short", "zip")
    store.upload_path(rec.id).write_bytes(make_zip())
    partial = settings.data_dir / "datasets" / f".{rec.id}.x1y2.partial"
    (partial / "images").mkdir(parents=True)
    store.close()
    with TestClient(create_app(settings)) as client:
        failed = client.get(f"/api/datasets/{rec.id}").json()
        assert failed["state"] == "failed" and "server stopped while this dataset was importing" in failed["error"]
        assert _leftovers(settings.data_dir) == []
        assert client.delete(f"/api/datasets/{rec.id}").status_code == 204
