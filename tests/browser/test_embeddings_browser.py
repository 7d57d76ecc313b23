"""Importing embeddings in a real chromium: the Runs tab's form uploads a small .npz (no dataset linked), the
page opens the new run, which finishes and draws its map; the page says there are no thumbnails and requests
none (the page fixture fails on any console error, e.g. a 409'd thumbnail), and hovering a point still works."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.browser import RUN_TIMEOUT_MS, point_position, wait_done

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CLASSES, PER_CLASS = 6, 6


def test_upload_npz_and_open_its_map(page, tmp_path: Path, shots: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([f"kind-{i}" for i in range(CLASSES)], PER_CLASS)
    vectors = rng.normal(size=(CLASSES, 8))[np.repeat(np.arange(CLASSES), PER_CLASS)] + rng.normal(size=(36, 8))
    path = tmp_path / "vectors.npz"
    np.savez(path, vectors=vectors.astype(np.float32), labels=labels)

    page.goto("/?tab=runs")
    page.click("#import-embeddings summary")
    page.set_input_files("#emb-file", str(path))
    page.fill("#emb-name", "outside vectors")
    page.select_option("#emb-distance", "cosine")
    page.click("#import-embeddings button[type=submit]")
    page.wait_for_url("**/?run=*", timeout=30_000)
    wait_done(page)
    test_points = (CLASSES - CLASSES // 2) * PER_CLASS  # first_half: kind-3..kind-5 are the unseen classes
    page.wait_for_function(f"() => document.getElementById('map').data[0].x.length === {test_points}",
                           timeout=RUN_TIMEOUT_MS)
    assert page.text_content("#run-h") == "outside vectors"
    note = page.text_content("#embeddings-note")
    assert "without a model" in note and "no thumbnails" in note
    assert page.evaluate("document.querySelectorAll('img[src*=\"/thumb\"]').length") == 0
    x, y = point_position(page, "map", 0)
    page.mouse.move(x, y)
    page.wait_for_function("() => document.getElementById('hover-card').style.display === 'block'")
    assert "kind-" in page.text_content("#hover-card .caption")
    page.mouse.click(x, y)  # neighbours by vector, shown by class and rank without thumbnails
    page.wait_for_function("() => document.getElementById('retrieval-h').closest('section')"
                           ".querySelectorAll('figure').length === 11")  # the query and its 10 neighbours
    assert "1. kind-" in page.text_content("section:has(#retrieval-h) .gallery")
    assert page.locator("a[href*='what=checkpoint']").count() == 0
    assert "imported embeddings · 8-d · cosine" in page.locator("section:has(#run-h) > p.small").first.text_content()
    page.wait_for_selector("#failures-h, #pairs-h", timeout=30_000)
    assert page.locator("#retrain, #curves-h, #logdet-h").count() == 0  # no network: nothing to retrain or plot
    page.screenshot(path=shots / "embeddings-import.png", full_page=True)

    page.goto("/?tab=data")  # its labels-only dataset: an empty state, no thumbnail requested, nothing to train
    page.click("text=embeddings: outside vectors")
    assert "no images" in page.text_content("#labels-only")
    assert page.locator("text=Train on this set").count() == 0
