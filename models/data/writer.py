"""ImageSetWriter: builds an image set in a temp folder next to its destination, renamed into place at the end.

Every importer (uploads, folders, built-ins, benchmarks) feeds decoded images through one writer, so the
on-disk form, the class rules (≥ 2 images per class, ≥ 2 classes), the statistics and the atomicity are the
same whatever the source. Nothing is half-imported: on any error the temp folder is removed.

Images are stored as PNG (lossless: drawn and small sets, uploads) or, for photographic benchmark sets, as JPEG
(`image_format="jpeg"`): a JPEG decodes ~3× faster than the PNG of the same photo, which is what keeps a training
loader from being decode-bound. A source that is already a plain JPEG (safety.Decoded.plain_jpeg) and needs no
downscale keeps its bytes, so it is never encoded twice; any other image is encoded at JPEG_QUALITY.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.errors import DatasetError, SkippedFile
from models.data.imageset import (FORMAT_VERSION, IMAGE_FORMATS, META_FILE, THUMB_SIZE, ImageSet, ImportReport,
                                   downscale, image_file)

_DIGITS = re.compile(r"(\d+)")
# Re-encoded (downscaled) photos. At 95 (Pillow's default 4:2:0 chroma, as the published JPEGs have) scikit-learn's
# two sample photos at 512 px keep 35.5 / 38.1 dB PSNR: 90 loses 2 dB, 98 gains 1 dB for 1.4× the bytes (the
# chroma subsampling, not the quality, bounds it there), and all of them decode 4–9× faster than the PNG.
JPEG_QUALITY = 95


def natural_key(text: str) -> tuple:
    """Sort key where "class10" follows "class9"."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.casefold()) for t in _DIGITS.split(text) if t)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, dst)


@dataclass
class _Entry:
    class_name: str
    path: str
    grey: bool
    size: tuple[int, int]
    train: bool | None
    partition: str | None  # "train", "query" or "gallery": In-Shop's evaluation partition
    sums: np.ndarray  # (2,) or (2, 3): sum and sum of squares of pixel/255, per channel
    count: int  # pixels


class ImageSetWriter:
    """Use as a context manager: `add()` each image, then `finish()` returns the ImportReport.

    `max_side` bounds the longest side of stored images (larger ones are downscaled, aspect kept);
    `image_format` ("png" or "jpeg") is how they are stored (module docstring).
    """

    def __init__(self, dest: str | Path, max_side: int = 256, image_format: str = "png"):
        if max_side < 8:
            raise DatasetError(f"max_side must be at least 8 pixels, got {max_side}")
        if image_format not in IMAGE_FORMATS:
            raise DatasetError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        self.image_format = image_format
        self.dest = Path(dest)
        if self.dest.exists():
            raise DatasetError(f"{self.dest} already exists; import into a new folder or delete it first")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.max_side = max_side
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", suffix=".partial", dir=self.dest.parent))
        (self.tmp / "images").mkdir()
        (self.tmp / "thumbs").mkdir()
        self._entries: list[_Entry] = []

    def __enter__(self) -> "ImageSetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # after finish() the folder has already been renamed away

    def add(self, class_name: str, path: str, image: Image.Image, train: bool | None = None,
            partition: str | None = None, jpeg: bytes | None = None) -> None:
        """Store one canonical ("L" or "RGB") image of class `class_name`; `path` is its original name.

        RGB images whose three channels are equal count as greyscale, so a set is 1-channel exactly when every
        image is grey (readers convert each file to the set's channel count). `train` is the benchmark's own
        split for this image, when it has one; `partition` its evaluation role ("train", "query" or "gallery") in
        a benchmark that retrieves queries from a gallery. `jpeg`: the source's bytes when they are a plain JPEG
        decoding to exactly `image` (safety.Decoded.plain_jpeg), kept as they are in a JPEG set if no downscale
        is needed.
        """
        stored = downscale(image, self.max_side)
        keep = self.image_format == "jpeg" and jpeg is not None and stored is image
        arr = np.asarray(stored, dtype=np.uint8)
        grey = arr.ndim == 2 or bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
        if grey and arr.ndim == 3:
            stored = Image.fromarray(arr[..., 0])
        n = len(self._entries)
        if keep:
            self._tmp_image(n).write_bytes(jpeg)
        elif self.image_format == "jpeg":
            buf = io.BytesIO()
            stored.save(buf, "JPEG", quality=JPEG_QUALITY)
            self._tmp_image(n).write_bytes(buf.getvalue())
            with Image.open(buf) as im:  # the statistics describe the pixels as stored, encoding error included
                arr = np.asarray(im, dtype=np.uint8)
        else:
            stored.save(self._tmp_image(n), "PNG", compress_level=1)
        if grey and arr.ndim == 3:
            arr = arr[..., 0]
        x = arr.astype(np.float64) / 255.0
        axes = (0, 1)
        sums = np.stack([x.sum(axis=axes), (x * x).sum(axis=axes)])
        if max(stored.size) <= THUMB_SIZE and self.image_format == "png":
            _link_or_copy(self._tmp_image(n), self._tmp_thumb(n))  # small images are their own thumbnail
        else:
            thumb = stored.copy()
            thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
            thumb.save(self._tmp_thumb(n), "PNG")
        self._entries.append(_Entry(class_name, path, grey, stored.size, train, partition, sums,
                                    arr.shape[0] * arr.shape[1]))

    def _tmp_image(self, n: int) -> Path:
        return self.tmp / "images" / f"t{n:06d}{IMAGE_FORMATS[self.image_format]}"

    def _tmp_thumb(self, n: int) -> Path:
        return self.tmp / "thumbs" / f"t{n:06d}.png"

    def finish(self, class_order: list[str] | None = None, skipped: list[SkippedFile] | None = None,
               warnings: list[str] | None = None) -> ImportReport:
        """Drop classes with < 2 images, number the rest, write meta.json and rename into place.

        `class_order` fixes the label order (benchmarks: by class id); otherwise classes are in natural
        sort order of their names. `skipped`/`warnings` from the caller are extended and returned.
        """
        skipped = list(skipped or [])
        warnings = list(warnings or [])
        by_class: dict[str, list[int]] = {}
        for n, e in enumerate(self._entries):
            by_class.setdefault(e.class_name, []).append(n)
        for name, members in list(by_class.items()):
            if len(members) < 2:
                del by_class[name]
                warnings.append(f"class {name!r} was dropped: it has {len(members)} usable image; "
                                "each class needs at least 2")
                skipped += [SkippedFile(self._entries[n].path, f"its class {name!r} has fewer than 2 usable images")
                            for n in members]
        if len(by_class) < 2:
            kept = ", ".join(repr(c) for c in by_class) or "none"
            raise DatasetError(f"need at least 2 classes with 2 or more usable images each; found {len(by_class)} "
                               f"({kept}). Put each class's images in its own folder")
        order = [c for c in class_order if c in by_class] if class_order else sorted(by_class, key=natural_key)
        kept_entries = [n for c in order for n in sorted(by_class[c], key=lambda n: natural_key(self._entries[n].path))]
        channels = 1 if all(self._entries[n].grey for n in kept_entries) else 3
        for i, n in enumerate(kept_entries):
            self._place(n, i, channels)
        self._write_meta(kept_entries, order, channels)
        os.rename(self.tmp, self.dest)
        return ImportReport(ImageSet(self.dest), skipped, warnings)

    def _place(self, n: int, i: int, channels: int) -> None:
        """Move temp image n to its final index i, converting grey PNGs to RGB in a colour set (a JPEG is not
        encoded again for that: readers convert it)."""
        for tmp, final in ((self._tmp_image(n), image_file(self.tmp, i, self.image_format)),
                           (self._tmp_thumb(n), self.tmp / "thumbs" / f"{i:06d}.png")):
            if channels == 3 and self._entries[n].grey and final.suffix == ".png":
                with Image.open(tmp) as im:
                    im.convert("RGB").save(final, "PNG", compress_level=1)
                tmp.unlink()
            else:
                os.replace(tmp, final)

    def _write_meta(self, kept: list[int], order: list[str], channels: int) -> None:
        entries = [self._entries[n] for n in kept]
        sums = np.zeros((2, 3))
        for e in entries:
            sums += e.sums[:, None] if e.grey else e.sums  # a grey image counts equally in R, G and B
        count = sum(e.count for e in entries)
        mean = sums[0] / count
        std = np.sqrt(np.maximum(sums[1] / count - mean ** 2, 0.0))
        sizes = {e.size for e in entries}
        native = next(iter(sizes)) if len(sizes) == 1 else None
        label_of = {name: label for label, name in enumerate(order)}
        splits = [e.train for e in entries]
        meta = {
            "format_version": FORMAT_VERSION,
            "class_names": order,
            "labels": [label_of[e.class_name] for e in entries],
            "paths": [e.path for e in entries],
            "channels": channels,
            "native_size": native[0] if native and native[0] == native[1] else None,
            "max_side": self.max_side,
            "image_format": self.image_format,
            "mean": [round(float(m), 6) for m in mean[:channels]],
            "std": [round(float(s), 6) for s in std[:channels]],
            "split": None if any(t is None for t in splits) else splits,
            "partition": None if any(e.partition is None for e in entries) else [e.partition for e in entries],
        }
        (self.tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
