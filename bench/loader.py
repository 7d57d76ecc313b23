"""Training-data throughput with the standard augmentation: the worker DataLoader vs a bare single-process loop.

Real photographs are not shipped, so the benchmark writes `images` JPEGs of 300–500 px (smooth gradients with
shapes, quality 90: they decode like photos, not like noise) in the CUB-200-2011 layout, imports them as a user
imports a benchmark (models.data.import_benchmark: stored as JPEG within the 512-px bound, so these originals keep
their bytes) and then, per P × K batch of the same sampler, produces the 224-px random resized crops + flips of
every image:

- peer: a bare loop in one process — PIL decodes each original JPEG, torchvision.transforms.v2
  RandomResizedCrop(224) + RandomHorizontalFlip, stack;
- dmlscope: models.data.loader (TrainImages over the stored JPEGs, the seeded per-image crops) through a torch
  DataLoader with 0 workers (the same work in the trainer's process) and with `workers` worker processes.

Ratios are images/s ÷ the peer's (above 1× is faster). The workers' start-up is paid in the warm-up pass, as
a training run pays it once (the workers are persistent).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import Section, ratio
from bench.timing import compare

FULL: dict[str, Any] = {"images": 8000}
CROP = 224


def _write_jpegs(root: Path, images: int, classes: int, seed: int = 0) -> None:
    """`images` JPEGs of 300–500 px per side, spread over `classes` folders, listed as CUB-200-2011 lists them."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    listed = []
    for i in range(images):
        w, h = (int(v) for v in rng.integers(300, 501, size=2))
        base = rng.integers(0, 256, size=(2, 3))
        t = np.linspace(0.0, 1.0, w)[None, :, None]
        row = (base[0] * (1 - t) + base[1] * t).astype(np.uint8)
        im = Image.fromarray(np.repeat(row, h, axis=0))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            x1, y1 = x0 + int(rng.integers(20, w - x0)), y0 + int(rng.integers(20, h - y0))
            draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        rel = f"{i % classes + 1:03d}.class/{i:05d}.jpg"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(root / "images" / rel, "JPEG", quality=90)
        listed.append(rel)
    (root / "images.txt").write_text("".join(f"{i + 1} {rel}\n" for i, rel in enumerate(listed)))
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {i % classes + 1}\n" for i in range(images)))
    (root / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.class\n" for c in range(classes)))


def _bare_loop(source: Path, paths: list[str], batches: list[list[int]]) -> int:
    """The peer: decode each original JPEG with PIL and augment it with torchvision's v2 transforms, in turn."""
    from PIL import Image
    from torchvision.transforms import v2

    augment = v2.Compose([v2.RandomResizedCrop(CROP, antialias=True), v2.RandomHorizontalFlip()])
    n = 0
    for batch in batches:
        views = []
        for i in batch:
            with Image.open(source / paths[i]) as im:
                x = torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())
            views.append(augment(x))
        n += len(torch.stack(views))
    return n


def _through(loader: Any) -> int:
    return sum(len(x) for x, _ in loader)


def run(images: int = 2000, classes: int = 50, classes_per_batch: int = 8, samples_per_class: int = 4,
        workers: int | None = None, repeat: int = 3) -> list[Section]:
    """Images/s of the peer loop and of the DataLoader with 0 and `workers` (default: the CPU count) workers."""
    from models.config import AugmentConfig
    from models.data import MPerClassSampler, import_benchmark
    from models.data.loader import EpochJobs, TrainImages, train_loader

    workers = workers if workers is not None else max(1, os.cpu_count() or 1)
    augment = AugmentConfig(mode="standard")
    with tempfile.TemporaryDirectory(prefix="dmlscope-bench-loader-") as tmp:
        source = Path(tmp) / "jpegs"
        _write_jpegs(source, images, classes)
        image_set = import_benchmark("cub", source, Path(tmp) / "set").image_set
        steps = max(1, images // (classes_per_batch * samples_per_class))  # about one pass over the images
        sampler = MPerClassSampler(image_set.labels, np.arange(len(image_set)), classes_per_batch,
                                   samples_per_class, steps, generator=torch.Generator().manual_seed(0))
        batches = list(sampler)
        dataset = TrainImages(image_set, CROP, augment, seed=0)
        loaders = {n: train_loader(dataset, EpochJobs(batches, range), n, False, seed=0) for n in (0, workers)}
        torch.manual_seed(0)
        load_before = os.getloadavg()[0]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in DataLoader workers: per-image ops are too small to share, and on a busy
        try:  # machine two intra-op threads of a 224-px resize wait on each other (15× slower, measured)
            results = compare(lambda: _bare_loop(source, image_set.paths, batches),
                              lambda: _through(loaders[0]), lambda: _through(loaders[workers]), repeat=repeat)
        finally:
            torch.set_num_threads(threads)
            del loaders  # stops the persistent workers before the folder goes
    (n, t_bare), (_, t_inline), (_, t_workers) = results
    section = Section("Training data: the worker DataLoader vs a bare single-process loop (224-px augmented crops)",
                      ["images", "pipeline", "img/s", "vs bare loop"])
    stored = f"stored {image_set.image_format.upper()}"
    for name, t in (("bare loop: PIL JPEG decode + torchvision v2 crop/flip, 1 process", t_bare),
                    (f"dmlscope loader, 0 workers ({stored})", t_inline),
                    (f"dmlscope loader, {workers} workers ({stored})", t_workers)):
        section.add(f"{n:,}", name, f"{n / t:,.0f}", ratio(n / t, n / t_bare))
    section.notes += [
        f"{images} generated JPEGs of 300–500 px in {classes} classes; {steps} P × K batches of "
        f"{classes_per_batch} × {samples_per_class} (about one pass); median of {repeat} passes, interleaved, after "
        "a warm-up pass that also starts the persistent workers. One torch thread per process (the DataLoader "
        "gives each worker one; the single-process rows get one too, their fastest setting here).",
        "The peer decodes the original JPEGs; dmlscope decodes the store's files: a benchmark's JPEGs that need no "
        "downscale are kept byte for byte (checked and decoded once at import), so both decode the same bytes and "
        "the 0-worker row shows the loader's own overhead, the worker row what worker processes win back when cores "
        f"are free. This machine has {os.cpu_count()} cores, shared: its 1-minute load average "
        f"was {load_before:.1f} before the timed passes and {os.getloadavg()[0]:.1f} after them (above the core "
        "count, workers find no idle core to use).",
    ]
    return [section]
