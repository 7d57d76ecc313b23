"""Views that hold at 11k classes, in a real chromium: imported embeddings of 11 000 classes (2–3 images each,
so ~5 500 classes per split) open on a run page whose per-class table sorts, finds and pages, whose histograms
and best/worst chart are drawn instead of a bar per class, whose map greys every class but the one searched
or picked, and which — told to scatter at most 2 000 points — draws a sample over a density layer, says so,
and still answers a hover."""
from __future__ import annotations

import io
import time
from typing import Iterator

import httpx
import numpy as np
import pytest

from tests.support.browser import RUN_TIMEOUT_MS, point_position
from tests.support.server import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CLASSES = 11_000
IMPORT_TIMEOUT_S = 900  # evaluating and measuring 27k vectors of 11k classes: ~1 min alone, minutes on a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own: what an 11k-class run costs it stays out of the other browser tests' server."""
    live = Server(tmp_path_factory.mktemp("many-classes"))
    try:
        yield live.url
    finally:
        live.stop()


@pytest.fixture(scope="module")
def many_classes(server: str) -> dict:
    """The finished run of an embeddings file with CLASSES classes (posted as the browser's form would)."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(2, 4, CLASSES)
    labels = np.repeat([f"c{i:05d}" for i in range(CLASSES)], sizes)
    centres = rng.normal(size=(CLASSES, 4)) * 10
    vectors = (centres[np.repeat(np.arange(CLASSES), sizes)] + rng.normal(size=(len(labels), 4))).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors, labels=labels)
    with httpx.Client(base_url=server, timeout=120) as client:
        r = client.post("/api/embeddings", files={"file": ("many.npz", buf.getvalue())}, data={"name": "11k classes"})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        deadline = time.monotonic() + IMPORT_TIMEOUT_S
        while (run := client.get(f"/api/runs/{run_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, run
            time.sleep(0.5)
        assert run["status"] == "done", run
        run["test_points"] = client.get(f"/api/runs/{run_id}/points",
                                        params={"projection": "pca", "columns": "label"}).json()["count"]
    return run


def _settled(page) -> None:
    """Wait until the page's failure browser has its answer: no request of the page is left computing."""
    page.wait_for_function("() => document.querySelector('#failures-panel') && "
                           "!document.querySelector('#failures-panel .state.loading')", timeout=RUN_TIMEOUT_MS)


def _table_rows(page) -> list[list[str]]:
    return page.evaluate("Array.from(document.querySelectorAll('#class-table tbody tr'))"
                         ".map(tr => Array.from(tr.cells).map(td => td.textContent))")


def test_per_class_table_distributions_and_highlight(page, many_classes: dict) -> None:
    page.goto(f"/?run={many_classes['id']}&proj=pca")
    page.wait_for_function("() => document.getElementById('map')?.data?.[0]?.x?.length > 0", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#class-table tbody tr", timeout=RUN_TIMEOUT_MS)
    rows_in_all = int(page.text_content("#class-table-pages").split(" of ")[1].split()[0])
    assert rows_in_all == CLASSES  # each class is in one split: one row per class
    assert page.text_content("#class-table-pages").startswith("1–50 of")
    assert len(_table_rows(page)) == 50
    assert page.locator("#radius-bars, #density-bars").count() == 0  # no bar per class at 11k classes
    page.wait_for_selector("text=a class-pair matrix is drawn up to 300 classes")  # nor a 5 500² matrix

    # sort: radius descending, then ascending (missing values last either way)
    page.click("#class-table th button[data-key=radius_mean]")
    col = [c[0] for c in page.evaluate("Array.from(document.querySelectorAll('#class-table th'))"
                                       ".map(th => [th.getAttribute('aria-sort')])")].index("descending")
    values = [float(r[col]) for r in _table_rows(page)]
    assert values == sorted(values, reverse=True)
    page.click("#class-table th button[data-key=radius_mean]")
    values = [float(r[col]) for r in _table_rows(page)]
    assert values == sorted(values)
    page.click("#class-table-next")
    assert page.text_content("#class-table-pages").startswith("51–100 of")
    assert float(_table_rows(page)[0][col]) >= values[-1]

    # search, then pick the class: it is highlighted on the map, every other class grey
    page.fill("#class-table-search", "c01234")
    page.wait_for_function("() => document.getElementById('class-table-pages').textContent.startsWith('1–1 of 1 ')")
    split = page.get_attribute("#class-table tbody tr", "data-split")
    page.click("#class-table tbody tr button")  # the map turns to the class's split if it showed the other
    page.wait_for_function("() => document.querySelector('.legend .legend-items')?.textContent === 'c01234'")
    assert page.input_value("#map-split") == split
    assert not page.locator("#map-legend-many").is_hidden()
    page.wait_for_function("""() => { const m = document.getElementById('map').data[0].marker;
        return m.colorscale.some(s => s[1] === '#c9ced6') && Array.from(new Set(m.color)).sort().join() === '0,1'; }""")
    codes = page.evaluate("Array.from(document.getElementById('map').data[0].marker.color)")
    assert 2 <= codes.count(0) <= 3  # its 2–3 images in colour, every other point grey

    # distributions: a histogram per quantity, the best and worst 15 classes
    for key in ("radius_mean", "relative_density", "margin", "recall_at_1"):
        assert page.evaluate(f"document.getElementById('class-hist-{key}').data.length") >= 1, key
    bars = page.evaluate("document.getElementById('class-extremes').data.map(t => t.y.length)")
    assert bars == [15, 15]
    page.select_option("#class-extremes-key", "recall_at_1")
    page.wait_for_function("() => document.getElementById('class-extremes').data[0].name === 'worst 15'"
                           " && document.getElementById('class-extremes').layout.xaxis.title.text.startsWith('Recall')")
    _settled(page)


def test_map_past_its_limit_draws_a_sample_over_the_density(page, many_classes: dict) -> None:
    total = many_classes["test_points"]
    page.goto(f"/?run={many_classes['id']}&proj=pca&maxpts=2000")
    page.wait_for_selector("#map-sample", timeout=RUN_TIMEOUT_MS)
    drawn = page.evaluate("document.getElementById('map').data[0].x.length")
    assert drawn < total  # one point of every class at least: ~5 500 of ~13 750
    notice = page.text_content("#map-sample")
    assert f"of {total:,} points".replace(",", " ") in notice and "neighbours" in notice and "use all" in notice
    heat = page.evaluate("document.getElementById('map').data.filter(t => t.type === 'heatmap').map(t => t.z.length)")
    assert heat == [200]
    x, y = point_position(page, "map", drawn // 2)
    page.mouse.move(x, y)
    page.wait_for_function("() => document.getElementById('hover-card').style.display === 'block'")
    assert page.text_content("#hover-card .caption").startswith("c")
    page.mouse.click(x, y)  # neighbours of a drawn point among every point of the split
    page.wait_for_function("() => document.getElementById('retrieval-h').closest('section')"
                           ".querySelectorAll('figure').length === 11")
    _settled(page)
