"""ImageSet: an imported image set on disk, read back for training, display and queries.

Layout of the folder (written once by `ImageSetWriter`, never modified afterwards except for pixel caches):
```
meta.json              class names, labels, original paths, channels, native size, mean/std, split
images/000000.png      every accepted image, re-encoded (sanitised), longest side ≤ max_side; .jpg in a set
                       whose meta says "image_format": "jpeg" (benchmarks: writer.py), grey and colour files
                       mixed there, so readers convert each file to the set's channel count
thumbs/000000.png      64-px thumbnails (longest side)
cache_<size>.npy       uint8 (N, C, size, size), made on first use by pixels(size)
```
Square inputs are made the DML way: resize the short side to `size`, then centre-crop. Cropping keeps the
object's scale and aspect (padding would spend pixels on borders); for the built-in sets, which are square,
nothing is cropped.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.errors import DatasetError, SkippedFile
from models.data.safety import BadImage, UploadLimits, decode_image

META_FILE = "meta.json"
FORMAT_VERSION = 1
THUMB_SIZE = 64
IMAGE_FORMATS = {"png": ".png", "jpeg": ".jpg"}  # meta.json's image_format → the stored files' suffix
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
_IN_MEMORY_BYTES = 1 << 30  # caches up to this size are loaded; larger ones are memory-mapped


def image_file(root: Path, i: int, image_format: str) -> Path:
    """The stored image `i` of the set in `root` (a function, so a loader worker needs only the folder and format)."""
    return Path(root) / "images" / f"{i:06d}{IMAGE_FORMATS[image_format]}"


def fit_square(im: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`, then centre-crop to size × size (no-op when already that size)."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longest side is at most `max_side` (aspect kept, Lanczos); smaller images are left alone."""
    if max(im.size) <= max_side:
        return im
    scale = max_side / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)


def center_crop(pixels: np.ndarray, crop: int) -> np.ndarray:
    """The centre crop × crop of square images (..., S, S): a view, no copy; offsets as in fit_square."""
    side = pixels.shape[-1]
    if crop > side or pixels.shape[-2] != side:
        raise ValueError(f"cannot centre-crop {crop} px from images of shape {pixels.shape[-2:]}")
    o = (side - crop) // 2
    return pixels[..., o:o + crop, o:o + crop]


def image_array(im: Image.Image, size: int, channels: int) -> np.ndarray:
    """A canonical image → uint8 (C, size, size) in the set's channel count."""
    arr = np.asarray(fit_square(im.convert("L" if channels == 1 else "RGB"), size), dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


class ImageSet:
    """An imported image set (see the module docstring for the folder layout).

    `mean`/`std` are per channel on the 0..1 scale (pixel / 255), over the stored images. `split` is the
    benchmark's own train mask (N,) bool when the source had one, else None; `partition` (N,) str each
    image's evaluation role ("train", "query", "gallery") in a query → gallery benchmark (In-Shop), else None.
    `native_size` is the side of the stored images when they are all square and the same size, else None.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not an imported image set ({META_FILE} is missing); "
                               "import it with import_folder, import_zip or import_builtin")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{self.root} was written by another dmlscope version "
                               f"(format {meta.get('format_version')}, expected {FORMAT_VERSION}); re-import it")
        self.class_names: list[str] = meta["class_names"]
        self.labels = np.asarray(meta["labels"], dtype=np.int64)
        self.paths: list[str] = meta["paths"]
        self.channels: int = meta["channels"]
        self.native_size: int | None = meta["native_size"]
        self.max_side: int = meta["max_side"]
        self.image_format: str = meta.get("image_format", "png")  # sets written before JPEG storage are PNG
        if self.image_format not in IMAGE_FORMATS:
            raise DatasetError(f"{self.root} stores images as {self.image_format!r}, which this dmlscope cannot read")
        self.mean: tuple[float, ...] = tuple(meta["mean"])
        self.std: tuple[float, ...] = tuple(meta["std"])
        self.split: np.ndarray | None = None if meta["split"] is None else np.asarray(meta["split"], dtype=bool)
        # In-Shop's evaluation partition per image ("train" | "query" | "gallery"), else None (sets older than it too)
        partition = meta.get("partition")
        self.partition: np.ndarray | None = None if partition is None else np.asarray(partition, dtype=str)
        self.has_images: bool = meta.get("images", True)  # False: labels only, for imported embeddings
        self._pixels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageSet({str(self.root)!r}: {len(self)} images, {len(self.class_names)} classes, "
                f"{self.channels} channel(s), native size {self.native_size})")

    def image_path(self, i: int) -> Path:
        return image_file(self.root, i, self.image_format)

    @property
    def media_type(self) -> str:
        """The HTTP content type of the stored image files (thumbnails are always PNG)."""
        return MEDIA_TYPES[self.image_format]

    def thumbnail_path(self, i: int) -> Path:
        return self.root / "thumbs" / f"{i:06d}.png"

    def pixels(self, size: int) -> np.ndarray:
        """uint8 (N, C, size, size), decoded once: cached in memory and as `cache_<size>.npy`.

        Sets over 1 GiB at this size come back memory-mapped (read-only) rather than loaded.
        """
        if size < 1:
            raise DatasetError(f"image size must be positive, got {size}")
        if not self.has_images:
            raise DatasetError("this dataset holds the labels of imported embeddings, not images")
        if size not in self._pixels:
            path = self.root / f"cache_{size}.npy"
            shape = (len(self), self.channels, size, size)
            arr = _load_cache(path, shape)
            if arr is None:
                _write_cache(self, path, size, shape)
                arr = _load_cache(path, shape)
            self._pixels[size] = arr
        return self._pixels[size]

    def query_pixels(self, data: bytes, size: int, limits: UploadLimits | None = None,
                     resize: int | None = None) -> np.ndarray:
        """Untrusted image bytes → uint8 (C, size, size), prepared exactly as this set's images were.

        Same decoding, checks and downscale-to-max_side as the import, then `fit_square` to `resize` (default
        `size`) and the centre `size` crop: the evaluation view of models/augment.py, so a query image is seen
        by a model the way its evaluated images were. Raises DatasetError saying why a file is unusable.
        """
        try:
            im = decode_image(data, limits or UploadLimits(), self.max_side).image
        except BadImage as exc:
            raise DatasetError(f"the query image cannot be used: {exc.reason}") from None
        return np.ascontiguousarray(center_crop(image_array(downscale(im, self.max_side), resize or size,
                                                            self.channels), size))


def _load_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt
    if arr.shape != shape or arr.dtype != np.uint8:
        return None
    return arr if arr.nbytes > _IN_MEMORY_BYTES else np.array(arr)


def _write_cache(image_set: ImageSet, path: Path, size: int, shape: tuple[int, ...]) -> None:
    # Written to a unique temp name and renamed: concurrent readers see either no cache or a whole one.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i in range(len(image_set)):
            with Image.open(image_set.image_path(i)) as im:
                out[i] = image_array(im, size, image_set.channels)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class ImportReport:
    """What an import produced: the set, the files left out (with reasons) and set-level warnings."""

    image_set: ImageSet
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


