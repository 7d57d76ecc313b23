"""Apps over a temporary data folder: test settings, the tiny run config, and two prepared app states.

Training runs in real spawned workers (as in production), so tests that train keep the run tiny: 1 epoch of
2 steps on 16-px images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.support.polling import wait_for_dataset
from tests.support.zips import good_zip

TINY_CONFIG: dict[str, Any] = {
    "embedding_dim": 8, "epochs": 1, "steps_per_epoch": 2, "classes_per_batch": 2, "samples_per_class": 4,
    "image_size": 16, "miner": {"name": "all"}, "device": "cpu", "amp": False,
}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings; TestClient addresses the app as `testserver`, so that host name is allowed. Uploads are
    imported in a thread of the app (no process start per upload: the fast loop stays fast); the worker-process
    path has its own slow tests (tests/api/test_import_jobs.py) and serves every live server (tests.support.server)."""
    return Settings(**{"data_dir": data_dir, "builtin_datasets": [], "device": "cpu", "torch_threads": 1,
                       "warm_umap": False, "allowed_hosts": ["testserver"], "import_executor": "thread", **overrides})


def api_routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, path template, route) of every HTTP route the app serves, included routers flattened: a test
    that walks these also covers a route added later."""
    return [(method, rc.path, rc.original_route) for rc in iter_route_contexts(app.routes)
            for method in sorted(rc.methods or ())]


def upload(client: TestClient, data: bytes, filename: str = "upload.zip") -> Any:
    return client.post("/api/datasets", files={"file": (filename, data, "application/zip")})


def import_dataset(client: Any, state: str = "ready", **request: Any) -> dict[str, Any]:
    """POST /api/datasets with `request` (files=..., data=...), expect 202, wait for the import to end in
    `state` and return the dataset. `client`: a TestClient or an httpx.Client."""
    r = client.post("/api/datasets", **request)
    assert r.status_code == 202, r.text
    dataset = wait_for_dataset(client, r.json()["id"])
    assert dataset["state"] == state, dataset
    return dataset


def upload_ready(client: Any, data: bytes, filename: str = "upload.zip") -> dict[str, Any]:
    """Upload a zip and wait for its import to be ready; the dataset."""
    return import_dataset(client, files={"file": (filename, data, "application/zip")})


def settled(client: TestClient, r: Any) -> tuple[int | str, dict[str, Any]]:
    """What became of an upload: a refusal's (status, error body), or, accepted (202), the state its import
    ended in ("ready" | "failed") and the dataset."""
    if r.status_code != 202:
        return r.status_code, r.json()
    dataset = wait_for_dataset(client, r.json()["id"])
    return dataset["state"], dataset


class Trained:
    """One app with a dataset, a finished run `a` and its finished retrain `b` (`events`: a's SSE stream)."""

    def __init__(self, client: TestClient, dataset: dict[str, Any], a: dict[str, Any], b: dict[str, Any],
                 events: list[tuple[str, Any]], data_dir: Path):
        self.client, self.dataset, self.a, self.b, self.events, self.data_dir = client, dataset, a, b, events, data_dir


class Stored:
    """An app with one dataset already stored, and the means to check a request changed nothing.

    A rejected request must leave the store as it was: `snapshot()` captures the dataset and run lists the API
    answers plus every path under the data folder (the SQLite files aside: reads may touch their WAL), so a test
    compares the snapshot before and after."""

    def __init__(self, client: TestClient, settings: Settings, dataset: dict[str, Any]):
        self.client, self.settings, self.dataset = client, settings, dataset

    def snapshot(self) -> tuple[Any, Any, list[str]]:
        root = self.settings.data_dir
        paths = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("dmlscope.sqlite3"))
        return self.client.get("/api/datasets").json(), self.client.get("/api/runs").json(), paths


def stored_app(data_dir: Path, **overrides: Any) -> Iterator[Stored]:
    """An app over `data_dir` (settings `overrides`) holding one uploaded dataset, for the span of a `with`/fixture."""
    settings = make_settings(data_dir, **overrides)
    with TestClient(create_app(settings)) as client:
        yield Stored(client, settings, upload_ready(client, good_zip(), "first.zip"))
