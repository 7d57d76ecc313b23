"""The whole exploration loop in a real chromium against a real server: upload a zip, train a tiny run, see
one map point per test image, hover for a thumbnail, click for neighbours, retrain with the flow layer and the
determinant regularizer, open the comparison. Screenshots of each view land in test-output/browser/."""
from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import pytest

from tests.support.browser import CLASSES, PER_CLASS, RUN_TIMEOUT_MS, point_position, wait_done

pytestmark = [pytest.mark.browser, pytest.mark.slow]

def _api(server: str, path: str) -> dict:
    with urllib.request.urlopen(f"{server}/api/{path}", timeout=30) as r:
        return json.load(r)


def test_upload_train_explore_retrain_compare(page, server: str, digits_zip: Path, shots: Path) -> None:
    # 1. Upload: per-class counts, thumbnails, the rejected file with its reason.
    page.goto("/")
    page.wait_for_selector("text=Image sets")
    page.set_input_files("#zip-input", str(digits_zip))
    page.wait_for_selector("#import-progress")  # the import job's progress bar, with its cancel button
    page.wait_for_selector("text=Imported “digits6”")
    page.wait_for_selector("tr[data-state='ready'] >> text=digits6")
    page.wait_for_selector("#detail-h:has-text('digits6')")
    assert page.locator(".class-counts .badge").count() == CLASSES
    page.wait_for_function(f"() => document.querySelectorAll('.thumbs img').length === {CLASSES * 12}")
    assert page.locator("details:has-text('1 rejected file') td:has-text('notes.txt')").count() == 1
    page.screenshot(path=shots / "1-data.png", full_page=True)

    # 2. Train a tiny run from the generated form.
    page.click("text=Train on this set")
    page.wait_for_selector("#train-epochs")
    for field, value in {"epochs": "1", "steps_per_epoch": "4", "classes_per_batch": "3", "samples_per_class": "8",
                         "embedding_dim": "16"}.items():
        page.fill(f"#train-{field}", value)
    page.fill("#train-name", "baseline")
    two_cores = _api(server, "health")["cpus"] >= 2  # then the form offers two CPU processes (torchrun, gloo)
    if two_cores:
        page.select_option("#train-processes", "2")
    page.screenshot(path=shots / "2-train-form.png", full_page=True)
    page.click("button:has-text('Start training')")
    page.wait_for_selector("#progress-h")
    page.screenshot(path=shots / "3-progress.png", full_page=True)
    wait_done(page)
    parent_id = page.evaluate("new URLSearchParams(location.search).get('run')")
    assert _api(server, f"runs/{parent_id}")["processes"] == (2 if two_cores else 1)
    if two_cores:
        page.wait_for_selector("text=2 processes (torchrun)")

    # 3. The map: one point per test image (3 unseen classes × PER_CLASS), as one coloured scattergl trace.
    points = page.evaluate("document.getElementById('map').data.filter(t => t.type === 'scattergl')[0].x.length")
    assert points == (CLASSES - CLASSES // 2) * PER_CLASS

    # 4. Hover shows the thumbnail next to the cursor; a click lists k neighbours marked right/wrong.
    x, y = point_position(page, "map", 0)
    page.mouse.move(x, y)
    card = page.locator("#hover-card")
    card.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#hover-card img').naturalWidth > 0")
    assert "/thumb" in card.locator("img").get_attribute("src")
    page.mouse.click(x, y)
    page.wait_for_selector(".gallery figure.query")
    neighbours = page.locator(".gallery figure.right, .gallery figure.wrong")
    assert neighbours.count() == 10
    assert "image=" in page.url  # the selection is part of the shareable address
    page.select_option("#map-color", "correct")  # recolour: right/wrong nearest neighbour, kept in the URL
    page.wait_for_function("() => document.getElementById('map').data[0].marker.colorbar.title.text === 'correct@1'")
    assert "color=correct" in page.url
    assert page.locator("#map-color option[value=logdet]").is_disabled()  # no flow layer, no log|det J|
    page.wait_for_selector("#radius-bars .main-svg")
    page.wait_for_selector(".state.empty:has-text('Flow layer off')")
    page.screenshot(path=shots / "4-explore.png", full_page=True)

    # 5. Toggle and retrain: flow layer on and the determinant regularizer.
    page.click("#retrain summary")
    page.check("#retrain-flow-enabled")
    page.check("#retrain-reg-det")
    page.wait_for_selector("text=flow.enabled: false → true")
    page.click("button:has-text('Retrain with these changes')")
    page.wait_for_selector("text=Retrained from")
    wait_done(page)
    child_id = page.evaluate("new URLSearchParams(location.search).get('run')")
    assert child_id != parent_id
    assert _api(server, f"runs/{child_id}")["parent_id"] == parent_id
    page.wait_for_function("() => document.getElementById('logdet-map')?.data?.[0]?.x?.length > 0")
    assert not page.locator("#map-color option[value=logdet]").is_disabled()
    page.screenshot(path=shots / "5-child-logdet.png", full_page=True)

    # 6. The run list shows the child under its parent.
    page.click("header nav >> text=Runs")
    page.wait_for_selector(f"li[data-run='{parent_id}'] li[data-run='{child_id}']")

    # 7. Compare: both maps, linked hover, the metrics table.
    page.goto(f"/?compare={parent_id},{child_id}")
    for div in ("map-a", "map-b"):
        page.wait_for_function(f"() => document.getElementById('{div}')?.data?.[0]?.x?.length === {points}",
                               timeout=RUN_TIMEOUT_MS)
    x, y = point_position(page, "map-a", 3)
    page.mouse.move(x, y)
    page.wait_for_function("() => document.getElementById('map-b').data[1].x.length === 1")
    assert page.locator("#compare-metrics tbody tr").count() > 0
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelectorAll('.gallery figure.query').length === 2")
    page.screenshot(path=shots / "6-compare.png", full_page=True)


def test_folder_upload_and_the_servers_error_message(page, tmp_path: Path, shots: Path,
                                                    expected_errors: list[str]) -> None:
    """A picked folder (webkitdirectory) imports with relative paths; a rejected upload shows the server's detail."""
    from PIL import Image

    for cls in ("circle", "square"):
        (tmp_path / "shapes" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 90 if cls == "circle" else 200, 120)).save(tmp_path / "shapes" / cls / f"{i}.png")
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("L", (16, 16), 128).save(tmp_path / "one" / "only" / "a.png")

    page.goto("/?tab=data")
    page.wait_for_selector("text=Image sets")
    page.set_input_files("#folder-input", str(tmp_path / "shapes"))
    page.wait_for_selector("#import-progress")
    page.wait_for_selector("text=Imported “shapes”: 6 images in 2 classes")
    page.wait_for_selector("#detail-h:has-text('shapes')")
    page.wait_for_function("() => document.querySelectorAll('.thumbs img').length === 6")

    expected_errors.append("status of 400")  # chromium logs the rejected upload's answer
    page.set_input_files("#folder-input", str(tmp_path / "one"))
    alert = page.locator(".state.error[role=alert]")
    alert.wait_for()
    assert "Upload rejected" in alert.inner_text() and "class" in alert.inner_text()
    page.screenshot(path=shots / "0-upload-error.png", full_page=True)
