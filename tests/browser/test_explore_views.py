"""Asking questions of the map in a real chromium (issue 14): selection → panel → URL → reload, the class
legend (stable colours, hide, isolate, search), the failure browser, the class-pair heat map, the query's
split, the Jacobian downloads, compare's shared colour scale, unit-free bars and kept image, number formats,
the per-class charts' common order, the live loss history, a cancelled run's kept checkpoint, the header's
queue count and deleting a set whose run is running. Two tiny runs are trained once through the API."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.browser import CLASSES, PER_CLASS, RUN_TIMEOUT_MS, TEST_POINTS, Api, map_ready, point_position

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {"epochs": 1, "steps_per_epoch": 4, "classes_per_batch": 3, "samples_per_class": 8, "embedding_dim": 16}
NUMBER = re.compile(r"^(—|-?\d+\.\d{3})$")


@pytest.fixture(scope="module")
def runs(server: str, digits_zip: Path) -> Iterator[dict]:
    api = Api(server)
    dataset = api.upload(digits_zip)
    a = api("POST", "/runs", json={"dataset_id": dataset["id"], "config": TINY, "name": "euclid"})
    api.wait(a["id"], lambda r: r["status"] == "done", "finished")
    b = api("POST", f"/runs/{a['id']}/retrain", json={"patch": {"distance": {"name": "cosine"},
                                                                "flow": {"enabled": True, "depth": 1, "hidden": 8}},
                                                      "name": "cosine + flow"})
    api.wait(b["id"], lambda r: r["status"] == "done", "finished")
    yield {"api": api, "dataset": dataset, "a": a["id"], "b": b["id"]}


def _visible(page, div: str = "map") -> int:
    return page.evaluate(f"Array.from(document.getElementById('{div}').data[0].x).filter(v => !Number.isNaN(v)).length")


def test_box_selection_panel_url_and_reload(page, runs: dict, shots: Path) -> None:
    page.goto(f"/?run={runs['a']}&proj=pca")
    map_ready(page)
    page.click(".modebar-btn[data-val='select'][data-attr='dragmode']")
    box = page.evaluate("""() => { const gd = document.getElementById('map'); const r = gd.getBoundingClientRect();
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        return [r.left + xa._offset, r.top + ya._offset, xa._length, ya._length]; }""")
    left, top, width, height = box
    # the left half of the plot area: the expected rows are the points whose pixel x is there
    expected = page.evaluate("""(mid) => { const gd = document.getElementById('map'); const xa = gd._fullLayout.xaxis;
        return Array.from(gd.data[0].x).filter(v => xa.l2p(v) < mid).length; }""", width / 2)
    page.mouse.move(left + 2, top + 2)
    page.mouse.down()
    page.mouse.move(left + width / 4, top + height / 2, steps=5)
    page.mouse.move(left + width / 2, top + height - 2, steps=5)
    page.mouse.up()
    panel = page.locator("#selection-panel")
    panel.wait_for(state="visible")
    page.wait_for_selector(f"#selection-size:has-text('{expected} images')")
    assert 0 < expected < TEST_POINTS
    assert page.locator("#selection-grid img").count() == min(expected, 60)
    assert page.locator("#selection-classes tbody tr").count() >= 1
    assert re.search(r"sel=\d+(,\d+)*", page.url)
    page.screenshot(path=shots / "7-selection.png", full_page=True)

    page.select_option("#map-color", "lipschitz")  # the selection survives a recolouring
    page.wait_for_function(f"() => document.getElementById('map').data[0].selectedpoints?.length === {expected}")
    page.reload()
    map_ready(page)
    page.wait_for_selector(f"#selection-size:has-text('{expected} images')")
    page.wait_for_function(f"() => document.getElementById('map').data[0].selectedpoints?.length === {expected}")

    page.click("#selection-panel button:has-text('Clear selection')")
    page.wait_for_function("() => !new URLSearchParams(location.search).get('sel')")
    assert panel.is_hidden()


def test_legend_keeps_colours_hides_isolates_and_searches(page, runs: dict) -> None:
    page.goto(f"/?run={runs['a']}&proj=pca")
    map_ready(page)
    items = page.locator(".legend-item")
    assert items.count() == CLASSES // 2
    swatch = "(l) => getComputedStyle(document.querySelector(`.legend-item[data-label='${l}'] .swatch`)).backgroundColor"
    colour_before = page.evaluate(swatch, CLASSES - 1)
    scale_before = page.evaluate("document.getElementById('map').data[0].marker.colorscale")
    page.select_option("#map-split", "all")
    map_ready(page, count=CLASSES * PER_CLASS)
    assert items.count() == CLASSES
    assert page.evaluate(swatch, CLASSES - 1) == colour_before  # the same class keeps its colour
    assert page.evaluate("document.getElementById('map').data[0].marker.colorscale") == scale_before
    page.select_option("#map-split", "test")
    map_ready(page)

    label = CLASSES - 1
    page.click(f".legend-item[data-label='{label}']")  # hide one class
    page.wait_for_function(f"() => document.querySelector(\".legend-item[data-label='{label}']\").ariaPressed === 'false'")
    assert _visible(page) == TEST_POINTS - PER_CLASS
    page.click(f".legend-item[data-label='{label}']", modifiers=["Alt"])  # isolate it
    page.wait_for_function(f"() => document.querySelectorAll(\".legend-item[aria-pressed='true']\").length === 1")
    assert _visible(page) == PER_CLASS
    page.click(".legend button:has-text('show all')")
    page.dblclick(f".legend-item[data-label='{label}']")  # a double-click isolates too
    page.wait_for_function(f"() => document.querySelectorAll(\".legend-item[aria-pressed='true']\").length === 1")
    page.click(".legend button:has-text('show all')")
    page.wait_for_function("() => !document.querySelector(\".legend-item[aria-pressed='false']\")")
    assert _visible(page) == TEST_POINTS

    names = page.evaluate("Array.from(document.querySelectorAll('#map-class-names option')).map(o => o.value)")
    assert len(names) == CLASSES // 2  # the search completes the class names
    page.fill("#map-class-search", names[0])
    page.dispatch_event("#map-class-search", "change")
    page.wait_for_function("() => document.querySelectorAll(\".legend-item[aria-pressed='true']\").length === 1")
    assert _visible(page) == PER_CLASS
    page.click(".legend button:has-text('show all')")
    failures = runs["api"]("GET", f"/runs/{runs['a']}/failures", params={"limit": 1})["count"]
    page.check("#map-wrong-only")
    page.wait_for_function(f"() => Array.from(document.getElementById('map').data[0].x).filter(v => !Number.isNaN(v)).length === {failures}")


def test_failure_browser(page, runs: dict, shots: Path) -> None:
    api = runs["api"]
    answer = api("GET", f"/runs/{runs['a']}/failures", params={"limit": 40})
    assert answer["count"] > 0, "the tiny run should miss some test images"
    page.goto(f"/?run={runs['a']}&proj=pca")
    map_ready(page)
    rows = page.locator("#failures tbody tr")
    page.wait_for_function(f"() => document.querySelectorAll('#failures tbody tr').length === {len(answer['failures'])}")
    margins = [float(t) for t in rows.locator("td:nth-child(2)").all_inner_texts()]
    assert margins == sorted(margins) and all(NUMBER.match(t) for t in rows.locator("td.num").all_inner_texts())
    assert rows.first.locator("figure.f-wrong").count() >= 1  # its nearest neighbour is wrong
    page.locator("#failures-panel").scroll_into_view_if_needed()
    page.screenshot(path=shots / "8-failures.png", full_page=True)
    page.select_option("#failures-sort", "lipschitz")
    page.wait_for_function("() => { const v = Array.from(document.querySelectorAll('#failures tbody tr td:nth-child(3)')).map(t => +t.textContent); return v.length && v.every((x, i) => i === 0 || v[i - 1] >= x); }")
    assert page.locator("#failures-sort option[value=logdet]").is_disabled()  # no flow layer
    first = answer["failures"][0]["image_id"]
    page.click(f"#failures tr[data-image='{first}'] figure.f-query")
    page.wait_for_selector(f"section:has(#retrieval-h) figure.query:has-text('#{first}')")
    assert f"image={first}" in page.url


def test_class_pair_heat_map_isolates_the_two_classes(page, runs: dict) -> None:
    page.goto(f"/?run={runs['a']}&proj=pca")
    map_ready(page)
    page.wait_for_function("() => document.getElementById('class-pairs')?.data?.[0]?.z?.length === 3")
    z = page.evaluate("document.getElementById('class-pairs').data[0].z")
    assert all(z[i][i] is None for i in range(3)) and all(z[i][j] > 0 for i in range(3) for j in range(3) if i != j)
    page.locator("#pairs-panel").scroll_into_view_if_needed()
    x, y = page.evaluate("""() => { const gd = document.getElementById('class-pairs'); const r = gd.getBoundingClientRect();
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        return [r.left + xa._offset + xa._length * 5 / 6, r.top + ya._offset + ya._length / 6]; }""")
    page.mouse.click(x, y)  # row 0, column 2
    page.wait_for_function("() => document.querySelectorAll(\".legend-item[aria-pressed='true']\").length === 2")
    assert _visible(page) == 2 * PER_CLASS
    page.select_option("#pairs-what", "confusion")
    page.wait_for_function("() => document.getElementById('class-pairs').data[0].colorbar.title.text === 'count'")


def test_the_uploaded_query_searches_the_chosen_split(page, runs: dict, digits_zip: Path, tmp_path: Path) -> None:
    image = runs["api"].http.get(f"/datasets/{runs['dataset']['id']}/images/0").content
    (tmp_path / "q.png").write_bytes(image)
    page.goto(f"/?run={runs['a']}&proj=pca&split=train")
    map_ready(page)
    page.wait_for_selector("#query-within")
    assert page.input_value("#query-within") == "train"  # default: the map's split
    page.set_input_files("#query-file", str(tmp_path / "q.png"))
    with page.expect_response(lambda r: r.url.endswith("/query")) as answer:
        page.click("form:has(#query-file) button[type=submit]")
    train_ids = set(runs["api"]("GET", f"/runs/{runs['a']}/points", params={"split": "train", "projection": "pca"})
                    ["columns"]["image_id"])
    found = [n["image_id"] for n in answer.value.json()["neighbors"]]
    assert len(found) == 10 and set(found) <= train_ids  # searched among the train images, not the test ones
    page.wait_for_selector("text=among the train images")


def test_the_jacobian_panel_downloads_the_map_and_the_violins(page, runs: dict) -> None:
    page.goto(f"/?run={runs['b']}&proj=pca")
    page.wait_for_function("() => document.getElementById('logdet-map')?.data?.[0]?.x?.length > 0", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("() => document.getElementById('logdet-classes')?.data?.length > 0")
    with page.expect_download() as dl:
        page.click("#logdet-map-png")
    assert dl.value.suggested_filename == f"dmlscope-{runs['b']}-logdet-map.png"
    with page.expect_download() as dl:
        page.click("#logdet-classes-png")
    assert dl.value.suggested_filename == f"dmlscope-{runs['b']}-logdet-per-class.png"


def test_compare_shares_scales_states_units_and_keeps_the_image(page, runs: dict, shots: Path) -> None:
    api = runs["api"]
    page.goto(f"/?compare={runs['a']},{runs['b']}&proj=pca&color=lipschitz")
    for div in ("map-a", "map-b"):
        map_ready(page, div)
    scales = page.evaluate("['map-a', 'map-b'].map(id => { const m = document.getElementById(id).data[0].marker; return [m.cmin, m.cmax]; })")
    points = [api("GET", f"/runs/{r}/points", params={"projection": "pca"})["columns"]["lipschitz"] for r in ("a", "b")
              for r in [runs[r]]]
    lo, hi = min(min(p) for p in points), max(max(p) for p in points)
    assert scales[0] == scales[1] and scales[0] == pytest.approx([lo, hi], rel=1e-5)

    note = page.locator("#units-note")
    assert "euclidean" in note.inner_text() and "cosine" in note.inner_text() and "not comparable" in note.inner_text()
    stats = {r: api("GET", f"/runs/{runs[r]}/stats")["stats"]["test"] for r in ("a", "b")}
    page.wait_for_function("() => document.getElementById('paired-radius_mean')?.data?.length === 2")
    bars = page.evaluate("document.getElementById('paired-radius_mean').data.map(t => [t.customdata, t.y])")
    for (names, ys), r in zip(bars, ("a", "b")):
        radius = {c["name"]: c["radius_mean"] for c in stats[r]["per_class"]}
        assert ys == pytest.approx([radius[n] / stats[r]["global"]["pi_inter"] for n in names], rel=1e-5)
    density_order = page.evaluate("document.getElementById('paired-relative_density').data[0].customdata")
    assert density_order == bars[0][0]  # one class order in both charts

    geometry = {r[0]: r for r in page.evaluate(
        "Array.from(document.querySelectorAll('#compare-geometry tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))")}
    delta1 = next(v for k, v in geometry.items() if k.startswith("δ1"))
    ratio = next(v for k, v in geometry.items() if k.startswith("π_intra"))
    assert delta1[4] == "—"  # euclidean vs cosine: δ1 is in two units, no difference is shown
    assert float(ratio[4].replace("−", "-")) == pytest.approx(stats["b"]["global"]["pi_ratio"] - stats["a"]["global"]["pi_ratio"], abs=1e-3)
    changed = api("GET", "/compare", params={"a": runs["a"], "b": runs["b"]})["changed"][0]
    entered = len(set(changed["b_neighbors"]) - set(changed["a_neighbors"]))
    assert page.locator(".changes").first.inner_text() == f"+{entered} −{entered}"  # k in, k out
    pa, pb = (api("GET", f"/runs/{runs[r]}/class-pairs") for r in ("a", "b"))
    page.wait_for_function("() => document.getElementById('class-pairs-diff')?.data?.[0]?.z?.length === 3")
    z = page.evaluate("document.getElementById('class-pairs-diff').data[0].z")
    at = lambda p, r, c: p["confusion"][p["classes"].index(r)][p["classes"].index(c)]  # noqa: E731
    assert z == [[None if r == c else at(pb, r, c) - at(pa, r, c) for c in pa["classes"]] for r in pa["classes"]]
    assert page.locator("#pairs-diff-what option[value=gap]").is_disabled()  # euclidean vs cosine
    for cell in page.locator("#compare-metrics td.num").all_inner_texts():
        assert re.match(r"^(—|-?\d+\.\d{3}|[▲▼] [+−]\d+\.\d{3}|0\.000)$", cell), cell
    x, y = point_position(page, "map-a", 2)
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelectorAll('.gallery figure.query').length === 2")
    image = page.evaluate("new URLSearchParams(location.search).get('image')")
    assert image is not None
    page.screenshot(path=shots / "9-compare-units.png", full_page=True)
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('.gallery figure.query').length === 2", timeout=RUN_TIMEOUT_MS)
    assert page.locator(f".gallery figure.query:has-text('#{image}')").count() == 2


def test_run_page_numbers_and_per_class_charts(page, runs: dict) -> None:
    page.goto(f"/?run={runs['a']}&proj=pca")
    page.wait_for_selector("#metrics td.num")
    page.wait_for_selector("#density-bars .main-svg")
    for cell in page.locator("#metrics td.num, #geometry td.num").all_inner_texts():
        assert NUMBER.match(cell), cell  # "1.000" beside "0.998", never "1"
    orders = page.evaluate("['radius-bars', 'density-bars'].map(id => document.getElementById(id).layout.xaxis.categoryarray)")
    assert orders[0] == orders[1]
    page.select_option("#density-key", "density")
    page.wait_for_function("() => document.getElementById('density-bars').layout.yaxis.title.text.startsWith('density 1/s')")
    assert page.evaluate("document.getElementById('density-bars').layout.xaxis.categoryarray") == orders[0]
    layout = page.evaluate("document.getElementById('radius-bars').layout")
    assert not layout.get("annotations")  # no label drawn over the bars: δ1 / δ2 are named in the legend
    names = page.evaluate("document.getElementById('radius-bars').data.map(t => t.name)")
    help_text = page.locator("#radius-h ~ p.help, section:has(#radius-h) p.help").first.inner_text()
    assert any(n.startswith("δ2") for n in names) or "δ2" in help_text
    short = page.evaluate("import('./static/js/dom.js').then(m => m.shortName('a_very_long_class_name_indeed'))")
    assert short.endswith("…") and len(short) <= 14


def test_live_history_header_count_cancel_and_what_was_kept(page, runs: dict, shots: Path) -> None:
    api = runs["api"]
    page.goto("/?tab=runs")
    page.wait_for_selector("#queue-text:has-text('0 running')")
    run = api("POST", "/runs", json={"dataset_id": runs["dataset"]["id"], "name": "long",
                                     "config": {**TINY, "epochs": 500, "steps_per_epoch": 2}})
    page.wait_for_selector("#queue-text:has-text('1 running'), #queue-text:has-text('1 queued')", timeout=20_000)
    api.wait(run["id"], lambda r: (r.get("progress") or {}).get("epoch", 0) >= 3, "reached epoch 3")
    page.goto(f"/?run={run['id']}")
    # the epochs done before the page opened are drawn, on an epoch axis
    page.wait_for_function("""() => { const gd = document.getElementById('loss-curves');
        const t = gd?.data?.find(t => t.name.endsWith('(epoch mean)'));
        return t && t.x[0] === 1 && t.x.length >= 2 && gd.layout.xaxis.title.text === 'epoch'; }""", timeout=60_000)
    page.screenshot(path=shots / "10-live-history.png", full_page=True)
    page.click("button:has-text('Cancel')")
    kept = page.locator("#kept-text")
    kept.wait_for(timeout=60_000)
    page.wait_for_selector("#kept-text:has-text('Kept: the checkpoint of epoch')")
    epoch = int(re.search(r"epoch (\d+) of 500", kept.inner_text()).group(1))
    assert epoch >= 2 and f"Resume continues from epoch {epoch + 1}" in kept.inner_text()
    page.wait_for_function(f"() => document.getElementById('history-curves')?.data?.[0]?.x?.length === {epoch}")
    page.wait_for_selector("#queue-text:has-text('0 running')", timeout=20_000)
    page.screenshot(path=shots / "11-cancelled.png", full_page=True)


def test_deleting_a_set_with_a_running_run_offers_to_cancel_it(page, runs: dict, digits_zip: Path) -> None:
    api = runs["api"]
    dataset = api.upload(digits_zip)
    run = api("POST", "/runs", json={"dataset_id": dataset["id"], "config": {**TINY, "epochs": 500, "steps_per_epoch": 2}})
    api.wait(run["id"], lambda r: r["status"] == "running", "started")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.goto(f"/?tab=data&dataset={dataset['id']}")
    page.wait_for_selector(f"#detail-h:has-text('{dataset['name']}')")
    page.click("#detail-h ~ .actions button:has-text('Delete')")
    page.wait_for_function(f"() => !new URLSearchParams(location.search).get('dataset')", timeout=60_000)
    assert len(dialogs) == 1 and "queued or running" in dialogs[0] and "Cancel it" in dialogs[0]
    assert "force" not in dialogs[0]
    assert runs["api"].http.get(f"/datasets/{dataset['id']}").status_code == 404
    assert runs["api"].http.get(f"/runs/{run['id']}").status_code == 404


def test_leaderboard_sorts_filters_and_keeps_the_sort_in_the_url(page, runs: dict) -> None:
    api = runs["api"]
    page.goto("/?tab=runs")
    page.wait_for_selector("#leaderboard tbody tr")
    page.select_option("#board-dataset", runs["dataset"]["id"])
    page.select_option("#board-status", "done")
    done = [r for r in api("GET", "/runs")["data"] if r["dataset_id"] == runs["dataset"]["id"] and r["status"] == "done"]
    score = {r["id"]: r["summary"]["test"]["map_at_r"] for r in done}

    def shown() -> list[str]:
        return page.evaluate("Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.run)")

    assert sorted(shown()) == sorted(score) and len(score) >= 2
    assert [score[i] for i in shown()] == sorted(score.values(), reverse=True)  # default: best MAP@R first
    page.click("#leaderboard button[data-sort=map_at_r]")
    page.wait_for_function("() => new URLSearchParams(location.search).get('sort') === 'map_at_r'")
    assert [score[i] for i in shown()] == sorted(score.values())
    page.click("#leaderboard button[data-sort=distance]")
    distances = page.locator("#leaderboard tbody tr td:nth-child(6)").all_inner_texts()
    assert distances == sorted(distances) and "sort=distance" in page.url
    page.reload()
    page.wait_for_selector("#leaderboard th[aria-sort=ascending] button[data-sort=distance]")
    page.check(f"#leaderboard tr[data-run='{runs['a']}'] input[type=checkbox]")
    assert page.is_checked(f"#pick-{runs['a']}")  # the table and the tree pick the same runs


def test_a_selection_in_compare_is_the_same_images_in_both_maps(page, runs: dict) -> None:
    page.goto(f"/?compare={runs['a']},{runs['b']}&proj=pca")
    for div in ("map-a", "map-b"):
        map_ready(page, div)
    page.hover("#map-a")
    page.click("#map-a .modebar-btn[data-val='select'][data-attr='dragmode']")
    left, top, width, height = page.evaluate("""() => { const gd = document.getElementById('map-a');
        const r = gd.getBoundingClientRect(); const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        return [r.left + xa._offset, r.top + ya._offset, xa._length, ya._length]; }""")
    page.mouse.move(left + 2, top + 2)
    page.mouse.down()
    page.mouse.move(left + width / 2, top + height - 2, steps=8)
    page.mouse.up()
    page.wait_for_selector("#selection-a-size")
    size = page.locator("#selection-a-size").inner_text()
    n = int(size.split()[0])
    page.wait_for_selector(f"#selection-b-size:has-text('{size}')")
    page.wait_for_function(f"() => document.getElementById('map-b').data[0].selectedpoints?.length === {n}")
    assert 0 < n < TEST_POINTS and re.search(r"sel=\d+", page.url)
    page.reload()
    page.wait_for_selector(f"#selection-b-size:has-text('{size}')", timeout=RUN_TIMEOUT_MS)
