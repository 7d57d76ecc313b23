"""Scale: an SOP-shaped data set end to end — generate, import, one epoch, embed + evaluate + statistics, UMAP,
`/points`, the run page in chromium — each stage's time and peak memory against a stated budget.

The set has Stanford Online Products' shape (120 053 images; 11 318 training + 11 316 test classes of 2–12
images each) in its published layout (Ebay_train.txt / Ebay_test.txt), with small generated images: a class is a
colour and a stripe pattern, plus per-image noise. It goes through the store's benchmark import (the CLI's
`dmlscope import sop`), `models.run.execute_run` (the server's worker call), `models.maps.ensure_projection`
(the map endpoint's call) and a real uvicorn + chromium for the last two stages.

Peak memory is this process's resident set (VmHWM), reset before each stage, so a stage's peak is its own.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np

from bench.report import Section, count, duration

FULL: dict[str, Any] = {"train_classes": 11_318, "test_classes": 11_316}
# Stage → seconds allowed on 2 cores: together under 15 minutes, the budget for the whole run.
BUDGET_S = {"generate images": 90, "import (store, SOP layout)": 120, "train 1 epoch": 240,
            "embed both splits": 45, "evaluate both splits": 120, "statistics and Lipschitz maps": 75,
            "PCA maps": 15, "UMAP (test split)": 120, "GET /points (binary)": 15,
            "run page in chromium (map drawn)": 45}
# The stages execute_run does in one call (train, then measure), each timed by its own clock (summary timings).
RUN_STAGES = {"train 1 epoch": "train_s", "embed both splits": "embed_s", "evaluate both splits": "evaluate_s",
              "statistics and Lipschitz maps": "stats_s", "PCA maps": "project_s"}
BUDGET_RSS = 6 << 30  # bytes: the machine has 8 GiB for 8 parallel users; a stage may take most of it, not more


def _reset_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


SOP_IMAGES_PER_CLASS = 120_053 / 22_634  # the real set's mean: most classes have 2–5 images, few up to 12


def class_sizes(classes: int, rng: np.random.Generator, low: int = 2, high: int = 12) -> np.ndarray:
    """Images per class in [low, high], skewed to small classes like SOP's, summing to round(classes × SOP's
    mean): a truncated geometric draw, then random ±1 corrections inside the bounds (a uniform 2–12 would give
    7 per class, 158k images instead of 120k)."""
    sizes = np.arange(low, high + 1)
    ratio = 0.835  # P(n + 1) / P(n): with low = 2, high = 12 the mean is 5.31, SOP's
    counts = rng.choice(sizes, classes, p=ratio ** (sizes - low) / (ratio ** (sizes - low)).sum())
    target = round(classes * SOP_IMAGES_PER_CLASS)
    while (excess := int(counts.sum()) - target) != 0:
        movable = np.flatnonzero(counts > low) if excess > 0 else np.flatnonzero(counts < high)
        picked = rng.choice(movable, min(abs(excess), len(movable)), replace=False)
        counts[picked] -= np.sign(excess)
    return counts


def sop_layout(root: Path, train_classes: int, test_classes: int, size: int = 16, seed: int = 0) -> int:
    """Write Stanford_Online_Products/ (Ebay_train.txt, Ebay_test.txt, class folders of JPEGs, as SOP's are);
    returns the number of images. Class c: a colour and a stripe period; each image adds its own noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "Stanford_Online_Products"
    per_class = class_sizes(train_classes + test_classes, rng)
    lists: dict[bool, list[str]] = {True: [], False: []}
    image_id = 0
    stripes = (np.arange(size)[None, :] + np.arange(size)[:, None]) % 4
    for c, n in enumerate(per_class):
        folder = base / f"class{c // 1000:02d}_final"
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.integers(0, 256, 3)
        pattern = (stripes < 1 + c % 3)[:, :, None] * 60
        for k in range(n):
            image_id += 1
            pixels = colour + pattern + rng.normal(0, 25, (size, size, 3))
            rel = f"{folder.name}/{c}_{k}.JPG"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(base / rel, quality=95)
            lists[c < train_classes].append(f"{image_id} {c + 1} {c // 1000 + 1} {rel}")
    header = "image_id class_id super_class_id path\n"
    for train, name in ((True, "Ebay_train.txt"), (False, "Ebay_test.txt")):
        (base / name).write_text(header + "\n".join(lists[train]) + "\n")
    return image_id


def run(train_classes: int = 11_318, test_classes: int = 11_316, size: int = 16,
        browser: bool = True, progress: bool = False) -> list[Section]:
    """Every stage once (a scale run takes minutes); `browser=False` skips chromium (e.g. where none is);
    `progress` prints each stage's row when it ends."""
    from models.config import RunConfig
    from models.maps import ensure_projection
    from models.run import execute_run
    from server.app import create_app
    from server.imports import import_benchmark
    from server.settings import Settings
    from server.store import Store

    from bench.serving import _LoopbackServer

    section = Section("Scale: an SOP-shaped set end to end (time and peak memory per stage)",
                      ["stage", "what", "time", "budget", "peak RSS", "within budget"])
    results: dict[str, Any] = {}

    def stage(name: str, what: str, fn: Callable[[], Any]) -> Any:
        _reset_peak()
        start = time.perf_counter()
        out = fn()
        seconds, peak = time.perf_counter() - start, _peak_rss()
        ok = seconds <= BUDGET_S[name] and peak <= BUDGET_RSS
        section.add(name, what, duration(seconds), duration(BUDGET_S[name]), f"{peak / 2**30:.2f} GiB",
                    "yes" if ok else "NO")
        if progress:  # a long run shows each stage as it ends, not only the table at the end
            print(" | ".join(section.rows[-1]), flush=True)
        results[name] = seconds
        return out

    with tempfile.TemporaryDirectory(prefix="dmlscope-scale-") as tmp:
        tmp_path = Path(tmp)
        images = stage("generate images", f"{train_classes} + {test_classes} classes, {size}×{size} JPEG",
                       lambda: sop_layout(tmp_path / "sop", train_classes, test_classes, size))
        settings = Settings(data_dir=tmp_path / "data", builtin_datasets=[])
        store = Store.open(settings)
        try:
            dataset = stage("import (store, SOP layout)", f"{count(images)} images, predefined split",
                            lambda: import_benchmark(store, "sop", tmp_path / "sop", "sop-shaped"))
            config = RunConfig.model_validate({
                "embedding_dim": 64, "epochs": 1, "classes_per_batch": min(32, train_classes), "samples_per_class": 2,
                "split": {"mode": "predefined"}, "device": "cpu"})
            record = store.create_run(dataset.id, config, name="scale", status="done")
            run_dir = store.run_dir(record.id)
            summary = stage("train 1 epoch", "train and measure (one call: rows below split its clock)",
                            lambda: execute_run(store.image_set(dataset.id), config, run_dir))
        finally:
            store.close()
        _split_run_row(section, summary["timings"], config.classes_per_batch, progress)
        test_points = int(summary["num_test"])
        stage("UMAP (test split)", "k-NN graph (exact to 20k, then NN-descent), fit (sample + transform past 200k)",
              lambda: ensure_projection(run_dir, "umap", "test"))

        app = create_app(settings)
        with _LoopbackServer(app) as server, httpx.Client(base_url=server.url, timeout=600) as client:
            def points() -> int:
                r = client.get(f"/api/runs/{record.id}/points",
                               params={"split": "test", "projection": "umap", "format": "binary"})
                r.raise_for_status()
                return r.num_bytes_downloaded

            wire = stage("GET /points (binary)", "first request: build, encode, send", points)
            section.rows[-1][1] += f" ({wire / 2**20:.1f} MiB on the wire)"
            if browser:
                stage("run page in chromium (map drawn)", "headless, page load to the first map",
                      lambda: _page(server.url, record.id))
    total = sum(results.values())
    section.notes += [
        f"{count(images)} images ({size}×{size} JPEG), {train_classes} training + {test_classes} test classes of "
        f"2–12 images (SOP's shape); {count(test_points)} test points on the map. "
        f"Total {duration(total)} against {duration(sum(BUDGET_S.values()))} budgeted (15 min). Each stage "
        "once; the machine's load is printed with the table.",
        "Peak RSS: this process's VmHWM, reset before each stage (chromium runs in its own processes, not "
        "counted); training and the measuring stages after it are one call, whose peak is on the training row. "
        f"Memory budget per stage: {BUDGET_RSS / 2**30:.0f} GiB.",
    ]
    return [section]


def _split_run_row(section: Section, timings: dict[str, float], classes_per_batch: int, progress: bool) -> None:
    """Replace execute_run's one row by a row per stage, from the run's own timings (peak RSS: the call's)."""
    what = {"train 1 epoch": f"small_cnn, P×K = {classes_per_batch}×2, every training image once",
            "embed both splits": "every image of both splits, eval transform",
            "evaluate both splits": "exact k-NN, Recall@K, MAP@R, R-Precision, NMI, per class",
            "statistics and Lipschitz maps": "radius, density, margins per class; local and network Lipschitz",
            "PCA maps": "train, test and all"}
    peak = section.rows.pop()[4]
    for name, key in RUN_STAGES.items():
        seconds = float(timings[key])
        section.add(name, what[name], duration(seconds), duration(BUDGET_S[name]),
                    peak if name == "train 1 epoch" else "—", "yes" if seconds <= BUDGET_S[name] else "NO")
        if progress:
            print(" | ".join(section.rows[-1]), flush=True)


def _page(url: str, run_id: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/?run={run_id}&proj=umap")
            page.wait_for_function("() => document.getElementById('map')?.data?.[0]?.x?.length > 0",
                                   timeout=300_000)
        finally:
            browser.close()


if __name__ == "__main__":
    import os

    print(f"load average before: {os.getloadavg()}")
    for s in run(progress=True):
        print(s.markdown())
    print(f"load average after: {os.getloadavg()}")
