"""Faults: the server killed with SIGKILL mid-training and mid-upload, workers that die or hang, a full disk.

After each, the store is consistent: nothing half-written is listed or left on disk, runs are resumable, and
the API says what happened (a failed run's reason, 507 for a full disk) instead of hanging or corrupting.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import io
import os
import signal
import sqlite3
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import server.imports
from models.data.writer import ImageSetWriter
from server.app import create_app
from server.imports import execute_import, stage_zip, stored_build
from server.store import Store, atomic_write_bytes
from tests.support.app import TINY_CONFIG, Stored, import_dataset, make_settings, upload, upload_ready
from tests.support.polling import read_sse, wait_for, wait_until
from tests.support.server import Server
from tests.support.zips import good_zip, make_zip
from tests.support.workers import alive, worker_pids

LONG = {**TINY_CONFIG, "epochs": 500, "steps_per_epoch": 20}


def _big_zip(n: int = 1500, side: int = 48) -> bytes:
    """Enough noise images that importing them takes seconds: time to kill the server half-way."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(png, "PNG", compress_level=0)
            zf.writestr(f"big/class{i % 5}/{i}.png", png.getvalue())
    return buf.getvalue()


def _hidden_or_temp(data_dir: Path) -> list[str]:
    return [str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
            if p.name.startswith(".") or p.name.endswith((".tmp", ".partial")) or p.parent.name == "tmp"]


@pytest.mark.slow
def test_sigkill_mid_training_and_mid_upload_then_restart_and_resume(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    config = {**TINY_CONFIG, "epochs": 4, "steps_per_epoch": 300}  # still training while the big import starts
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            dataset = import_dataset(http, files={"file": ("shapes.zip", make_zip(), "application/zip")})
            big = _big_zip()  # made before the run starts: it must still be training once the import is under way
            run = http.post("/api/runs", json={"dataset_id": dataset["id"], "config": config}).json()
            wait_until(lambda: (data_dir / "runs" / run["id"] / "checkpoint.pt").exists(), "the first checkpoint")
            worker = wait_until(lambda: worker_pids(run["id"]), "the worker process")[0]

            threading.Thread(target=_post_quietly, args=(server.url, big), daemon=True).start()
            wait_until(lambda: list((data_dir / "datasets").glob(".*.partial")), "the import to be half-written")
            assert http.get(f"/api/runs/{run['id']}").json()["status"] == "running"
        server.proc.kill()  # SIGKILL: no shutdown handler runs
        server.proc.wait(timeout=10)
        assert _hidden_or_temp(data_dir), "the kill left nothing half-written: the test did not test"
        wait_until(lambda: not alive(worker), "the orphaned worker to exit", timeout=10)
    finally:
        server.log.close()

    server = Server(data_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            listed = http.get("/api/datasets").json()["data"]
            assert [d["id"] for d in listed if d["state"] == "ready"] == [dataset["id"]]
            interrupted = [d for d in listed if d["id"] != dataset["id"]]  # marked, with what to do, and emptied
            assert [d["state"] for d in interrupted] == ["failed"] and "upload it again" in interrupted[0]["error"]
            assert sorted(p.name for p in (data_dir / "datasets").iterdir()) == [dataset["id"]]
            assert _hidden_or_temp(data_dir) == []
            stopped = http.get(f"/api/runs/{run['id']}").json()
            assert stopped["status"] == "interrupted" and "resume" in stopped["error"], stopped
            assert http.post(f"/api/runs/{run['id']}/resume").json()["status"] == "queued"
            done = wait_until(lambda: (r := http.get(f"/api/runs/{run['id']}").json())["status"] in ("done", "failed")
                              and r, "the resumed run", timeout=300)
            assert done["status"] == "done" and done["summary"]["epochs"] == 4, done
            assert http.get(f"/api/runs/{run['id']}/stats").status_code == 200
    finally:
        server.stop()


def _post_quietly(url: str, data: bytes) -> None:
    try:
        httpx.post(f"{url}/api/datasets", files={"file": ("big.zip", data, "application/zip")}, timeout=120)
    except httpx.HTTPError:
        pass  # the server is killed under it


def _worker_process(run_id: str) -> int:
    return wait_until(lambda: worker_pids(run_id), "the worker process")[0]


@pytest.mark.slow
def test_a_worker_that_crashes_or_hangs_is_reported_not_waited_for(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "data", cancel_grace_s=1))) as client:
        dataset = upload_ready(client, make_zip(), "shapes.zip")
        run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": LONG}).json()
        with client.stream("GET", f"/api/runs/{run['id']}/events") as stream:
            events = []
            for kind, data in read_sse(stream.iter_lines()):
                events.append((kind, data))
                if kind == "progress" and len(events) == 3:
                    os.kill(_worker_process(run["id"]), signal.SIGSEGV)  # a native crash in the worker
        assert events[-1][0] == "end" and events[-1][1]["status"] == "failed"  # the stream ended: no hang
        assert "died without reporting (killed by signal SIGSEGV)" in events[-1][1]["error"]

        # A worker that stops responding (SIGSTOP) is killed once the cancel grace period is over.
        assert client.post(f"/api/runs/{run['id']}/resume").json()["status"] == "queued"
        worker = _worker_process(run["id"])
        wait_until(lambda: client.get(f"/api/runs/{run['id']}").json()["progress"]["stage"] == "train", "training")
        os.kill(worker, signal.SIGSTOP)
        assert client.post(f"/api/runs/{run['id']}/cancel").json()["cancel_requested"] is True
        cancelled = wait_for(client, run["id"], ("cancelled", "failed"), timeout=30)
        assert cancelled["status"] == "cancelled" and "stopped by force" in cancelled["error"], cancelled
        assert not alive(worker)


# ---- a full disk --------------------------------------------------------------------------------------------
def _disk_full(*_: Any, **__: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


class _FillsUp(io.RawIOBase):
    """A file that takes half of what it is given, then reports the disk full (ENOSPC)."""

    def __init__(self, real: Any):
        self.real = real

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self.real.write(raw[: len(raw) // 2])
        self.real.flush()
        _disk_full()

    def close(self) -> None:
        self.real.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every atomic writer's temp file (`.<name>.*.tmp`, whoever writes it: the store, the run folder, numpy)
    fills the disk half-way through its write; every other file opens as usual."""
    real_open = io.open

    def filling_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        return _FillsUp(f) if "w" in mode and name.startswith(".") and name.endswith(".tmp") else f

    monkeypatch.setattr(builtins, "open", filling_open)
    monkeypatch.setattr(io, "open", filling_open)
    yield


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_atomic_write_on_a_full_disk_keeps_the_previous_file(tmp_path: Path, full_disk: None) -> None:
    target = tmp_path / "artifact.npy"
    target.write_bytes(b"previous contents")
    with pytest.raises(OSError) as err:
        atomic_write_bytes(target, b"new contents " * 1000)
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous contents" and [p.name for p in tmp_path.iterdir()] == ["artifact.npy"]


@pytest.fixture(scope="module")
def with_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stored, dict[str, Any]]]:
    settings = make_settings(tmp_path_factory.mktemp("full") / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        dataset = upload_ready(client, make_zip(), "shapes.zip")
        run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": TINY_CONFIG}).json()
        assert wait_for(client, run["id"], ("done", "failed"))["status"] == "done"
        yield Stored(client, settings, dataset), run


@pytest.mark.slow
def test_a_full_disk_while_caching_an_artifact_is_507_and_corrupts_nothing(
        with_run: tuple[Stored, dict[str, Any]], full_disk: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stored, run = with_run
    run_dir = stored.settings.data_dir / "runs" / run["id"]
    for split in ("train", "test"):  # as in a run measured before the evaluation stored its correct@1: the
        (run_dir / f"correct_at_1_{split}.npy").unlink()  # server computes and caches it on the first /points
    before = _digests(run_dir)
    r = stored.client.get(f"/api/runs/{run['id']}/points", params={"projection": "pca"})
    assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
    assert "disk holding the data folder is full" in r.json()["detail"] and "Free some space" in r.json()["detail"]
    assert _digests(run_dir) == before  # no partial file, no temp file, nothing else touched
    monkeypatch.undo()  # space freed: the same request now works
    assert stored.client.get(f"/api/runs/{run['id']}/points", params={"projection": "pca"}).status_code == 200
    assert "correct_at_1_test.npy" in _digests(run_dir)


@pytest.mark.slow
def test_a_full_disk_during_an_import_fails_it_and_keeps_nothing_of_it(
        with_run: tuple[Stored, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The import worker's path (execute_import), run here so the disk can fill under it."""
    stored, _ = with_run
    store = stored.client.app.state.store
    before = stored.snapshot()
    real_add, added = ImageSetWriter.add, []

    def add_until_full(self: ImageSetWriter, *args: Any, **kwargs: Any) -> None:
        if len(added) == 3:
            _disk_full()
        added.append(args)
        real_add(self, *args, **kwargs)

    received = store.temp_path(".zip")
    received.write_bytes(good_zip())
    rec = stage_zip(store, received, "fills the disk")
    with monkeypatch.context() as m, pytest.raises(OSError) as err:
        m.setattr(ImageSetWriter, "add", add_until_full)
        execute_import(store, rec.id, stored_build(store, rec))
    assert err.value.errno == errno.ENOSPC
    failed = stored.client.get(f"/api/datasets/{rec.id}").json()
    assert failed["state"] == "failed" and "No space left on device" in failed["error"], failed
    assert stored.client.delete(f"/api/datasets/{rec.id}").status_code == 204
    assert stored.snapshot() == before  # no folder, no partial folder, no upload


@pytest.mark.slow
def test_a_full_disk_or_database_while_storing_an_upload_is_507_and_stores_nothing(
        with_run: tuple[Stored, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    stored, _ = with_run
    before = stored.snapshot()
    with monkeypatch.context() as m:
        m.setattr(server.imports.os, "replace", _disk_full)  # keeping the checked zip as the dataset's upload
        r = upload(stored.client, good_zip())
    assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
    assert stored.snapshot() == before

    real_exec = Store._exec

    def full_on_insert(self: Store, sql: str, args: tuple = ()) -> int:
        if sql.startswith("INSERT INTO datasets"):
            raise sqlite3.OperationalError("database or disk is full")
        return real_exec(self, sql, args)

    with monkeypatch.context() as m:
        m.setattr(Store, "_exec", full_on_insert)
        r = upload(stored.client, good_zip())
    assert r.status_code == 507 and "database or disk is full" in r.json()["detail"], r.text
    assert stored.snapshot() == before  # nothing recorded, and the received zip removed
