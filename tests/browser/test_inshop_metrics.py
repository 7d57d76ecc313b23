"""In chromium: a run on an In-Shop import shows the benchmark's own query → gallery Recall@K under its metrics."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from server.cli import main
from tests.support.benchmarks import inshop_tree

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def test_inshop_run_shows_query_to_gallery_recall(page, server: str, server_data: Path, tmp_path: Path,
                                                  shots: Path) -> None:
    inshop_tree(tmp_path / "inshop")
    assert main(["import", "inshop", str(tmp_path / "inshop"), "--name", "In-Shop q/g", "--data-dir",
                 str(server_data)]) == 0
    dataset = next(d for d in _get(f"{server}/api/datasets")["data"] if d["name"] == "In-Shop q/g")
    assert main(["train", "--data", dataset["id"], "--epochs", "1", "--steps-per-epoch", "1", "--embedding-dim", "4",
                 "--image-size", "8", "--set", "classes_per_batch=2", "--set", "samples_per_class=2", "--set",
                 "split.mode=predefined", "--device", "cpu", "--data-dir", str(server_data)]) == 0
    run = next(r for r in _get(f"{server}/api/runs")["data"] if r["dataset_id"] == dataset["id"])

    page.goto(f"/?run={run['id']}&proj=pca")
    table = page.locator("#query-gallery")
    table.wait_for(timeout=90_000)  # the page's statistics load after its map
    assert table.locator("th").all_inner_texts() == ["query → gallery", "R@1", "R@10", "R@20", "R@30", "R@40",
                                                     "R@50"]
    page.get_by_text("2 queries searched among 2 gallery images").wait_for()
    table.screenshot(path=str(shots / "run-inshop-query-gallery.png"))
