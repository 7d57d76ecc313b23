"""API test fixtures: an app over a temporary data folder, tiny image zips, and a tiny run config.

Training runs in real spawned workers (as in production), so tests that train keep the run tiny: 8×8 images
would be too small for the CNN, so the synthetic shapes are 16 px, 1 epoch of 2 steps.
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings

TINY_CONFIG: dict[str, Any] = {
    "embedding_dim": 8, "epochs": 1, "steps_per_epoch": 2, "classes_per_batch": 2, "samples_per_class": 4,
    "image_size": 16, "miner": {"name": "all"}, "device": "cpu", "amp": False,
}


def make_zip(num_classes: int = 4, per_class: int = 8, size: int = 16, extra: dict[str, bytes] | None = None) -> bytes:
    """A class-per-folder zip of synthetic shapes (real PNGs), plus optional extra members."""
    from models.data.builtin import synthetic_images

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for class_name, path, image in synthetic_images(num_classes, per_class, size):
            png = io.BytesIO()
            image.save(png, format="PNG")
            zf.writestr(f"shapes/{path}", png.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def png_bytes(size: int = 16) -> bytes:
    from models.data.builtin import synthetic_images

    _, _, image = next(iter(synthetic_images(2, 2, size)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings; TestClient addresses the app as `testserver`, so that host name is allowed."""
    return Settings(**{"data_dir": data_dir, "builtin_datasets": [], "device": "cpu", "torch_threads": 1,
                       "warm_umap": False, "allowed_hosts": ["testserver"], **overrides})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def dataset(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/datasets", files={"file": ("shapes.zip", make_zip(), "application/zip")})
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(client: TestClient, run_id: str, statuses: tuple[str, ...], timeout: float = 120.0) -> dict[str, Any]:
    """Poll a run until it reaches one of `statuses` (the SSE path has its own tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach {statuses}; last: {json.dumps(run)[:800]}")


def wait_until(predicate: Any, what: str, timeout: float = 120.0) -> Any:
    """Poll `predicate()` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from a text/event-stream, until the stream ends."""
    event, data = None, []
    for line in lines:
        if line == "":
            if event is not None:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])


class Trained:
    """One app with a dataset, a finished run `a` and its finished retrain `b` (`events`: a's SSE stream)."""

    def __init__(self, client: TestClient, dataset: dict[str, Any], a: dict[str, Any], b: dict[str, Any],
                 events: list[tuple[str, Any]], data_dir: Path):
        self.client, self.dataset, self.a, self.b, self.events, self.data_dir = client, dataset, a, b, events, data_dir


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Trains two tiny runs once for every test that explores results (each run costs a spawned worker)."""
    data_dir = tmp_path_factory.mktemp("trained") / "data"
    with TestClient(create_app(make_settings(data_dir))) as c:
        r = c.post("/api/datasets", files={"file": ("shapes.zip", make_zip(), "application/zip")})
        assert r.status_code == 201, r.text
        dataset = r.json()
        r = c.post("/api/runs", json={"dataset_id": dataset["id"], "config": TINY_CONFIG, "name": "base"})
        assert r.status_code == 201, r.text
        with c.stream("GET", f"/api/runs/{r.json()['id']}/events") as stream:
            events = list(read_sse(stream.iter_lines()))
        a = c.get(f"/api/runs/{r.json()['id']}").json()
        assert a["status"] == "done", a
        patch = {"distance": {"name": "cosine"}, "flow": {"enabled": True, "depth": 1, "hidden": 8}}
        r = c.post(f"/api/runs/{a['id']}/retrain", json={"patch": patch, "name": "cosine + flow"})
        assert r.status_code == 201, r.text
        b = wait_for(c, r.json()["id"], ("done", "failed"))
        assert b["status"] == "done", b
        yield Trained(c, dataset, a, b, events, data_dir)
