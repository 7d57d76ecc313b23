"""API fixtures: an app over a temporary data folder, one uploaded dataset, and two tiny trained runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.support.app import TINY_CONFIG, Trained, import_dataset, make_settings
from tests.support.polling import read_sse, wait_for
from tests.support.zips import make_zip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def dataset(client: TestClient) -> dict[str, Any]:
    return import_dataset(client, files={"file": ("shapes.zip", make_zip(), "application/zip")})


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Trains two tiny runs once for every test that explores results (each run costs a spawned worker)."""
    data_dir = tmp_path_factory.mktemp("trained") / "data"
    with TestClient(create_app(make_settings(data_dir))) as c:
        dataset = import_dataset(c, files={"file": ("shapes.zip", make_zip(), "application/zip")})
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
