"""Helpers for the chromium tests: the shared digits subset's shape, waiting for a map, finding a point on it,
and a small HTTP client that prepares runs through the API (the page then only explores them)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import httpx

from tests.support.polling import wait_until

CLASSES = 6  # the digits zip: first_half split, 3 seen classes to train on, 3 unseen ones to explore
PER_CLASS = 30
TEST_POINTS = (CLASSES - CLASSES // 2) * PER_CLASS
RUN_TIMEOUT_MS = 150_000  # one tiny run: a few steps, embed, metrics, stats, projections (a first UMAP compiles numba)


def point_position(page: Any, div_id: str, row: int) -> tuple[float, float]:
    """Viewport pixel of point `row` of trace 0 in a Plotly div (from its axes' data→pixel maps)."""
    return tuple(page.evaluate("""([id, row]) => {
        const gd = document.getElementById(id); const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.getBoundingClientRect();
        return [box.left + xa._offset + xa.l2p(gd.data[0].x[row]), box.top + ya._offset + ya.l2p(gd.data[0].y[row])];
    }""", [div_id, row]))


def wait_done(page: Any) -> None:
    """The open run page shows its run finished and has drawn its map."""
    page.wait_for_selector("#run-h ~ [data-status='done']", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("() => document.getElementById('map')?.data?.[0]?.x?.length > 0", timeout=RUN_TIMEOUT_MS)


def map_ready(page: Any, div: str = "map", count: int = TEST_POINTS) -> None:
    """The Plotly div `div` draws exactly `count` points."""
    page.wait_for_function(f"() => document.getElementById('{div}')?.data?.[0]?.x?.length === {count}",
                           timeout=RUN_TIMEOUT_MS)


class Api:
    """The server's HTTP API for preparing what a page explores; every answer must be a success."""

    def __init__(self, server: str):
        self.http = httpx.Client(base_url=f"{server}/api", timeout=60)

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def upload(self, zip_path: Path) -> dict:
        """Upload a zip and wait for its import to be ready; the dataset."""
        accepted = self("POST", "/datasets", files={"file": (zip_path.name, zip_path.read_bytes(), "application/zip")})
        dataset = wait_until(lambda: (d := self("GET", f"/datasets/{accepted['id']}"))["state"] != "importing" and d,
                             f"the import of {zip_path.name}", timeout=RUN_TIMEOUT_MS / 1000)
        assert dataset["state"] == "ready", dataset
        return dataset

    def wait(self, run_id: str, done: Callable[[dict], bool], what: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            run = self("GET", f"/runs/{run_id}")
            if done(run):
                return run
            assert run["status"] not in ("failed",), run
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} never {what}: {run}")
