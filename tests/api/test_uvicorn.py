"""The real thing: `serve()` under uvicorn in a subprocess on a free loopback port, driven over HTTP.

Uploads a zip, trains a tiny run while reading its SSE stream, explores it, retrains and compares, then
restarts the server on the same data folder and finds everything intact.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.api.conftest import TINY_CONFIG, make_zip, read_sse

SERVE = "from server.app import serve; from server.settings import Settings; serve(Settings())"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a test server process: this checkout's code, no built-ins, CPU, plus `settings`."""
    return {**os.environ, "DMLSCOPE_DATA_DIR": str(data_dir), "DMLSCOPE_PORT": str(port),
            "DMLSCOPE_BUILTIN_DATASETS": "", "DMLSCOPE_WARM_UMAP": "false", "DMLSCOPE_DEVICE": "cpu",
            "DMLSCOPE_TORCH_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            **{f"DMLSCOPE_{k.upper()}": v for k, v in settings.items()}}


class Server:
    def __init__(self, data_dir: Path, **settings: str):
        self.port, self.data_dir = _free_port(), data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        env = server_env(data_dir, self.port, **settings)
        self.log = (data_dir.parent / f"server-{self.port}.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"the server did not come up:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does: a graceful shutdown
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()


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
        ds = http.post("/api/datasets", files={"file": ("shapes.zip", make_zip(), "application/zip")}).json()

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
