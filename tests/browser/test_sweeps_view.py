"""The Sweeps view in a real chromium against a real server: start a tiny two-variant sweep from the form, follow
it to `done`, read the comparison table and the chart of paired differences, reload the shareable address, and
see the under-trained warning on one of its run pages. Screenshots land in test-output/browser/."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SWEEP_TIMEOUT_MS = 300_000  # two tiny runs one after the other (a first UMAP compiles numba)
BASE = {"epochs": "1", "steps_per_epoch": "2", "classes_per_batch": "3", "samples_per_class": "4",
        "embedding_dim": "8"}


def _api(server: str, path: str) -> dict:
    with urllib.request.urlopen(f"{server}/api/{path}", timeout=30) as r:
        return json.load(r)


def test_start_follow_and_read_a_sweep(page, server: str, shots: Path) -> None:
    digits = next(d["id"] for d in _api(server, "datasets")["data"] if d["name"] == "digits")
    other = next(v["name"] for v in _api(server, "sweeps/variants")["variants"] if v["name"] != "baseline")

    page.goto("/?tab=sweeps")
    page.wait_for_selector("#sweep-dataset")
    page.click("summary:has-text('Base run')")
    for field, value in BASE.items():
        page.fill(f"#sweep-{field}", value)
    page.select_option("#sweep-dataset", digits)
    page.fill("#sweep-splits", "1")
    page.fill("#sweep-seeds", "1")
    page.uncheck("#sweep-select")
    for box in page.locator(".variant-list input[type=checkbox]").all():
        box.set_checked(box.get_attribute("value") in ("baseline", other))
    assert page.locator("form .row .help").inner_text() == "2 runs"  # what the sweep will train
    page.screenshot(path=shots / "sweep-1-form.png", full_page=True)
    page.click("button:has-text('Start the sweep')")

    page.wait_for_selector("#sweep-h, .state.error")
    assert not page.locator(".state.error").count(), page.locator(".state.error").inner_text()
    sweep_id = page.evaluate("new URLSearchParams(location.search).get('sweep')")
    assert _api(server, f"sweeps/{sweep_id}")["spec"]["variants"] == ["baseline", other]
    page.wait_for_selector("#sweep-runs tbody tr")
    page.screenshot(path=shots / "sweep-2-progress.png", full_page=True)
    page.wait_for_selector("#sweep-h ~ span [data-status='done']", timeout=SWEEP_TIMEOUT_MS)

    page.wait_for_selector("#sweep-table tbody tr")
    assert page.locator(f"#sweep-table tr[data-variant='{other}']").count() >= 1
    assert "2 / 2 runs finished" in page.locator("#sweep-progress").inner_text()
    page.wait_for_function("() => document.getElementById('sweep-chart')?.data?.length > 0")
    page.screenshot(path=shots / "sweep-3-results.png", full_page=True)

    # The address is the sweep: a reload draws the same table.
    page.reload()
    page.wait_for_selector(f"#sweep-table tr[data-variant='{other}']")
    assert page.locator("#sweep-runs tbody tr").count() == 2

    # Its runs are ordinary runs; 2 steps is under the minimum, so the run page says so.
    page.click("#sweep-runs tbody tr >> nth=0 >> a")
    page.wait_for_selector("#run-h")
    assert "Under-trained" in page.locator("[data-under-trained]").inner_text()
    page.screenshot(path=shots / "sweep-4-run-page.png")
    page.click("header nav >> text=Sweeps")
    page.wait_for_selector(f"#sweep-list tr[data-sweep='{sweep_id}']")
