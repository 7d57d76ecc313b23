"""Robustness fixtures: an app over a data folder that already holds a dataset, and a snapshot of what is stored.

A rejected request must leave the store as it was: `Stored.snapshot()` captures the dataset and run lists the
API answers plus every path under the data folder (the SQLite files aside: reads may touch their WAL), so a
test compares the snapshot before and after.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.api.conftest import make_settings
from tests.models.data_fixtures import class_files, make_zip


def api_routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, path template, route) of every HTTP route the app serves, included routers flattened: a test
    that walks these also covers a route added later."""
    return [(method, rc.path, rc.original_route) for rc in iter_route_contexts(app.routes)
            for method in sorted(rc.methods or ())]


def good_zip(n_classes: int = 3, per_class: int = 3, extra: list[tuple[str, bytes]] | None = None) -> bytes:
    """A sound class-per-folder zip of 8-px images (class c is colour c), plus `extra` (path, bytes) members."""
    return make_zip(class_files(n_classes, per_class) + (extra or []))


def upload(client: TestClient, data: bytes, filename: str = "upload.zip") -> Any:
    return client.post("/api/datasets", files={"file": (filename, data, "application/zip")})


class Stored:
    """An app with one dataset already stored, and the means to check a request changed nothing."""

    def __init__(self, client: TestClient, settings: Settings, dataset: dict[str, Any]):
        self.client, self.settings, self.dataset = client, settings, dataset

    def snapshot(self) -> tuple[Any, Any, list[str]]:
        root = self.settings.data_dir
        paths = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("dmlscope.sqlite3"))
        return self.client.get("/api/datasets").json(), self.client.get("/api/runs").json(), paths


def stored_app(data_dir: Path, **overrides: Any) -> Iterator[Stored]:
    settings = make_settings(data_dir, **overrides)
    with TestClient(create_app(settings)) as client:
        r = upload(client, good_zip(), "first.zip")
        assert r.status_code == 201, r.text
        yield Stored(client, settings, r.json())


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """Shared by a module's tests: each must leave the store as it found it, or say what it added."""
    yield from stored_app(tmp_path_factory.mktemp("robust") / "data")
