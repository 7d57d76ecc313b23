"""The run page's map at 100k and 1M points in headless chromium: bytes on the wire, time to map ready, hover.

A real uvicorn serves the app on loopback; Debian's chromium (Playwright, as the browser tests) opens the run
page. The run is imported embeddings of a labels-only dataset (as `POST /api/embeddings` makes one), laid out
as models/run.py writes a run folder, with precomputed maps and correct@1: a UMAP fit and a k-NN search of a
million points would take longer than the whole benchmark, and the map's own cost is what is measured here.
Points sit in 11 318 classes per million points (SOP's training classes; ~88 points each at 1M, ~9 at 100k)
around class centres, so the map has the clusters a trained embedding has; rows are in random class order (a
dataset stored class by class would compress better).

Run: `python -m bench.browser_map [--full]` (1M needs ~4 GB of memory and ~3 minutes).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.report import Section, count, duration, nbytes
from bench.serving import _LoopbackServer

FULL: dict[str, Any] = {"sizes": (100_000, 1_000_000)}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
HOVERS = 15
REPEATS = 3  # loads measured per size (after one warm-up load); the table shows the one of median map-ready


def _synthetic_run(data_dir: Path, n: int) -> str:
    """A finished embeddings run of n points in a labels-only dataset; returns its id."""
    from models.config import RunConfig
    from models.embeddings_import import write_labels_only_set
    from server.imports import import_now
    from server.settings import Settings
    from server.store import Store

    rng = np.random.default_rng(0)
    classes = max(10, round(n * 11_318 / 1_000_000))
    labels = rng.integers(0, classes, n)  # classes interleaved: no run of equal labels for gzip to find
    names = [f"class {i:05d}" for i in range(classes)]
    store = Store.open(Settings(data_dir=data_dir, builtin_datasets=[]))
    try:
        dataset = import_now(store, f"bench map {count(n)}", "embeddings",
                             lambda dest, _: write_labels_only_set(dest, names, labels))
        config = RunConfig(embedding_dim=8)
        rec = store.create_run(dataset.id, config, name=f"map {count(n)}", origin="embeddings", status="done")
        run_dir = store.run_dir(rec.id)
    finally:
        store.close()
    centres = rng.normal(size=(classes, 2)) * np.sqrt(classes)
    xy = (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32)
    (run_dir / "config.json").write_text(config.model_dump_json(), encoding="utf-8")
    (run_dir / "split.json").write_text(json.dumps({"train": [], "test": list(range(n))}), encoding="utf-8")
    arrays = {"embeddings_test": rng.standard_normal((n, 8), dtype=np.float32),
              "lipschitz_test": rng.random(n, dtype=np.float32),
              "projection_pca_test": xy, "projection_umap_test": xy,
              "correct_at_1_test": (rng.random(n) < 0.8).astype(np.int32)}
    for name, value in arrays.items():
        np.save(run_dir / f"{name}.npy", value)
    return rec.id


POINTS_TRACES = "document.getElementById('map').data.filter(t => t.meta !== undefined)"  # see plots.js drawMap


def _point_on_screen(page: Any, i: int) -> tuple[float, float]:
    """Page coordinates of the map's drawn point i (its position over the points traces, in drawing order)."""
    return page.evaluate("""(i) => {
      const div = document.getElementById('map'); const {xaxis, yaxis} = div._fullLayout; const box = div.getBoundingClientRect();
      const t = div.data.find(t => t.meta !== undefined && i >= t.meta && i < t.meta + t.x.length);
      return [box.left + xaxis._offset + xaxis.l2p(t.x[i - t.meta]), box.top + yaxis._offset + yaxis.l2p(t.y[i - t.meta])];
    }""", i)


def _measure(browser: Any, url: str, run_id: str) -> dict[str, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    wire = []
    page.on("requestfinished", lambda r: wire.append(r.sizes()["responseBodySize"]) if "/points" in r.url else None)
    page.goto(f"{url}/?run={run_id}&proj=umap")
    # the first animation frame that finds the map drawn, since the navigation started (a later evaluate would
    # wait for whatever the page does next)
    ready = page.wait_for_function("() => document.getElementById('map')?.data?.[0]?.x?.length > 0 && performance.now()",
                                   timeout=120_000).json_value() / 1000
    shown = page.evaluate(f"{POINTS_TRACES}.reduce((n, t) => n + t.x.length, 0)")
    fetched = page.evaluate("Math.max(...performance.getEntriesByType('resource')"
                            ".filter(e => e.name.includes('/points')).map(e => e.responseEnd)) / 1000")
    notice = page.text_content("#map-sample") if page.locator("#map-sample").count() else ""
    page.wait_for_timeout(1500)  # let the page's other panels settle before timing hovers
    rng = np.random.default_rng(1)
    hovers = []
    for i in rng.integers(0, shown, HOVERS):
        x, y = _point_on_screen(page, int(i))
        page.mouse.move(5, 5)
        page.wait_for_function("() => document.getElementById('hover-card')?.style.display !== 'block'")
        start = time.perf_counter()
        page.mouse.move(x, y)
        page.wait_for_function("() => document.getElementById('hover-card')?.style.display === 'block'", timeout=10_000)
        hovers.append(time.perf_counter() - start)
    page.close()
    return {"bytes": sum(wire), "ready": ready, "fetched": fetched, "hover": statistics.median(hovers),
            "hover_max": max(hovers), "shown": shown, "notice": notice}


def run(sizes: Sequence[int] = (100_000,)) -> list[Section]:
    from playwright.sync_api import sync_playwright

    from server.app import create_app
    from server.settings import Settings

    section = Section("Browser: the run page's map in headless chromium",
                      ["N", "points drawn", "/points on the wire", "/points received", "map ready", "hover (median)",
                       "hover (max)"])
    with tempfile.TemporaryDirectory(prefix="dmlscope-bench-") as tmp:
        data_dir = Path(tmp)
        runs = {n: _synthetic_run(data_dir, n) for n in sizes}
        app = create_app(Settings(data_dir=data_dir, builtin_datasets=[], warm_umap=False))
        with _LoopbackServer(app) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            for n, run_id in runs.items():
                _measure(browser, server.url, run_id)  # the server encodes and caches the body; chromium warms up
                loads = sorted((_measure(browser, server.url, run_id) for _ in range(REPEATS)),
                               key=lambda m: m["ready"])
                m = loads[len(loads) // 2]
                section.notes.append(f"{count(n)}: map ready in " + ", ".join(duration(r["ready"]) for r in loads)
                                     + " (/points received " + ", ".join(duration(r["fetched"]) for r in loads) + ")")
                section.add(count(n), count(m["shown"]), nbytes(m["bytes"]), duration(m["fetched"]),
                            duration(m["ready"]), duration(m["hover"]), duration(m["hover_max"]))
                if m["notice"]:
                    section.notes.append(f"{count(n)}: the page says “{m['notice']}”")
            browser.close()
    section.notes[:0] = [
        "A synthetic run of imported embeddings (labels-only dataset, 11 318 classes per million points around "
        "class centres; precomputed map and correct@1). Bytes: the /points response bodies as they crossed the "
        "wire (gzip), all the page requested. /points received: from navigation start to the last /points body's "
        "end (resource timing); map ready: from navigation start to the first animation frame that finds the "
        "map drawn, on the "
        f"load of median map-ready among {REPEATS} after a first (the server's encoded body cached, as for every load "
        "after a run's first). "
        f"Hover: mouse moved onto a drawn point until its hover card shows, median and max of {HOVERS} points, "
        "measured from Python (Playwright's round trip included). Targets (issue 13): ≤ 10 MB, ≤ 3 s, ≤ 100 ms at 1M.",
    ]
    return [section]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser_map", description=__doc__)
    parser.add_argument("--full", action="store_true", help="100k and 1M points (default: 100k)")
    args = parser.parse_args(argv)
    print("\n".join(s.markdown() for s in run(**(FULL if args.full else {}))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
