"""The real thing: `serve()` under uvicorn in a subprocess on a free loopback port, driven over HTTP.

Uploads a zip, trains a tiny run while reading its SSE stream, explores it, retrains and compares, then
restarts the server on the same data folder and finds everything intact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.support.app import TINY_CONFIG, import_dataset
from tests.support.polling import read_sse
from tests.support.server import Server
from tests.support.zips import make_zip

@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start() -> Server:
        started.append(Server(tmp_path / "data"))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def _train(http: httpx.Client, body: dict[str, Any], url: str = "/api/runs") -> tuple[dict[str, Any], list]:
    r = http.post(url, json=body)
    assert r.status_code == 201, r.text
    with http.stream("GET", f"/api/runs/{r.json()['id']}/events", timeout=180) as stream:
        events = list(read_sse(stream.iter_lines()))
    return events[-1][1], events


@pytest.mark.slow
def test_upload_train_explore_compare_and_restart(server_factory: Any) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert "text/html" in http.get("/").headers["content-type"]
        assert http.get("/openapi.json").json()["info"]["title"] == "dmlscope"
        ds = import_dataset(http, files={"file": ("shapes.zip", make_zip(), "application/zip")})

        run, events = _train(http, {"dataset_id": ds["id"], "config": TINY_CONFIG})
        assert run["status"] == "done", (run, server.output())
        assert [k for k, _ in events][0] == "run" and events[-1][0] == "end"
        assert any(k == "progress" and d["stage"] == "train" for k, d in events)

        points = http.get(f"/api/runs/{run['id']}/points", params={"projection": "pca"}).json()
        assert points["count"] == 16
        stats = http.get(f"/api/runs/{run['id']}/stats").json()
        assert stats["metrics"]["test"]["map_at_r"] is not None
        image_id = points["columns"]["image_id"][0]
        nbrs = http.get(f"/api/runs/{run['id']}/neighbors", params={"image_id": image_id, "k": 4}).json()
        assert len(nbrs["neighbors"]) == 4

        child, _ = _train(http, {"patch": {"distance": {"name": "snr"}}}, f"/api/runs/{run['id']}/retrain")
        assert child["status"] == "done" and child["parent_id"] == run["id"], child
        comparison = http.get("/api/compare", params={"a": run["id"], "b": child["id"]}).json()
        assert comparison["same_dataset"] and comparison["changed"]
        before = {"runs": http.get("/api/runs").json(), "datasets": http.get("/api/datasets").json(),
                  "points": points, "stats": stats, "neighbors": nbrs, "comparison": comparison}
    server.stop()

    server = server_factory()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        after = {"runs": http.get("/api/runs").json(), "datasets": http.get("/api/datasets").json(),
                 "points": http.get(f"/api/runs/{run['id']}/points", params={"projection": "pca"}).json(),
                 "stats": http.get(f"/api/runs/{run['id']}/stats").json(),
                 "neighbors": http.get(f"/api/runs/{run['id']}/neighbors",
                                       params={"image_id": image_id, "k": 4}).json(),
                 "comparison": http.get("/api/compare", params={"a": run["id"], "b": child["id"]}).json()}
        assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
        thumb = http.get(nbrs["neighbors"][0]["thumb_url"])
        assert thumb.status_code == 200 and "immutable" in thumb.headers["cache-control"]
