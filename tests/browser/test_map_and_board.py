"""The run page's map parameters (UMAP n_neighbors / min_dist in the URL, a 3-D view) and the leaderboard's
loss-curve overlay and grouping by config across seeds, in a real chromium (issue 14). Two tiny runs of one
config that differ only in seed are trained once through the API; the map test fits UMAP three times on
~90 points (the first fit compiles numba)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.browser import RUN_TIMEOUT_MS, TEST_POINTS, Api, map_ready

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# embedding_dim 12: no other browser module trains this config, so the group holds exactly these two seeds
CONFIG = {"epochs": 2, "steps_per_epoch": 2, "classes_per_batch": 3, "samples_per_class": 8, "embedding_dim": 12}


@pytest.fixture(scope="module")
def seeds(server: str, digits_zip: Path) -> Iterator[dict]:
    api = Api(server)
    dataset = api.upload(digits_zip)
    ids = [api("POST", "/runs", json={"dataset_id": dataset["id"], "config": {**CONFIG, "seed": s}, "name": f"seed {s}"})["id"]
           for s in (0, 1)]
    for run_id in ids:
        api.wait(run_id, lambda r: r["status"] == "done", "finished")
    yield {"api": api, "a": ids[0], "b": ids[1]}


def _redrawn(page, old_first_x: float) -> None:
    page.wait_for_function("""(old) => { const gd = document.getElementById('map');
        return gd?.data?.[0]?.x?.[0] !== old && !document.getElementById('map-computing'); }""",
                           arg=old_first_x, timeout=RUN_TIMEOUT_MS)


def test_umap_parameters_redraw_the_map_and_stay_in_the_url_and_3d(page, seeds: dict, shots: Path) -> None:
    page.goto(f"/?run={seeds['a']}&proj=umap&nn=5")
    map_ready(page)
    page.wait_for_selector("#map-computing", state="detached", timeout=RUN_TIMEOUT_MS)
    assert page.input_value("#map-nn") == "5" and page.input_value("#map-md") == "0.1"
    before = page.evaluate("Array.from(document.getElementById('map').data[0].x)")

    page.fill("#map-nn", "500")  # out of range: refused in the page, nothing is requested
    page.dispatch_event("#map-nn", "change")
    assert "nn=5" in page.url and page.evaluate("document.getElementById('map-nn').validity.valid") is False

    with page.expect_response(lambda r: "/points" in r.url and "n_neighbors=8" in r.url, timeout=RUN_TIMEOUT_MS):
        page.fill("#map-nn", "8")
        page.dispatch_event("#map-nn", "change")
    _redrawn(page, before[0])
    after = page.evaluate("Array.from(document.getElementById('map').data[0].x)")
    assert len(after) == TEST_POINTS and after != before
    assert "nn=8" in page.url

    page.reload()
    map_ready(page)
    assert page.input_value("#map-nn") == "8"
    page.wait_for_selector("#map-computing", state="detached", timeout=RUN_TIMEOUT_MS)
    assert page.evaluate("Array.from(document.getElementById('map').data[0].x)") == after  # the cached map

    page.check("#map-dim")
    page.wait_for_function(f"""() => {{ const t = document.getElementById('map')?.data?.[0];
        return t?.type === 'scatter3d' && t.z?.length === {TEST_POINTS} && !document.getElementById('map-computing'); }}""",
                           timeout=RUN_TIMEOUT_MS)
    assert "dim=3" in page.url and "nn=8" in page.url
    page.screenshot(path=str(shots / "map-3d.png"))
    page.uncheck("#map-dim")
    page.wait_for_function("() => document.getElementById('map')?.data?.[0]?.type === 'scattergl'", timeout=RUN_TIMEOUT_MS)
    assert "dim=" not in page.url


def test_leaderboard_overlays_ticked_runs_and_groups_seeds(page, seeds: dict, shots: Path) -> None:
    page.goto("/?tab=runs")
    for run_id in (seeds["a"], seeds["b"]):
        page.check(f"#leaderboard tr[data-run='{run_id}'] input[type=checkbox]")
    page.wait_for_function("() => document.getElementById('loss-overlay')?.data?.length === 2", timeout=30_000)
    names = page.evaluate("document.getElementById('loss-overlay').data.map(t => t.name)")
    assert sorted(names) == ["seed 0", "seed 1"]
    epochs = page.evaluate("document.getElementById('loss-overlay').data.map(t => Array.from(t.x))")
    assert epochs == [[1, 2], [1, 2]]  # history.json numbers epochs from 1

    page.uncheck(f"#leaderboard tr[data-run='{seeds['b']}'] input[type=checkbox]")
    page.wait_for_function("() => document.getElementById('loss-overlay')?.data?.length === 1", timeout=30_000)

    key = next(g["config_key"] for g in seeds["api"]("GET", "/run-groups")["data"] if seeds["a"] in g["run_ids"])
    page.check("#board-group")
    cell = page.wait_for_selector(f"#leaderboard-groups tr[data-group='{key}'] td[data-n]", timeout=30_000)
    assert cell.inner_text().strip() == "n = 2"
    assert "±" in page.inner_text(f"#leaderboard-groups tr[data-group='{key}']")
    assert "group=config" in page.url
    page.screenshot(path=str(shots / "leaderboard-groups.png"))
