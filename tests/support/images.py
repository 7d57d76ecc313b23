"""Generated image bytes: nothing binary is committed; every image is made here, small, from a seed."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 220), (220, 200, 40), (180, 40, 200), (40, 190, 200)]


def encode(im: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def solid(colour: tuple[int, ...] | int, size: tuple[int, int] = (8, 8), mode: str = "RGB", fmt: str = "PNG",
          seed: int = 0) -> bytes:
    """A near-solid image with a little noise (so re-encoding is not trivially constant)."""
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.asarray(colour, dtype=np.int16), (size[1], size[0], 3 if mode == "RGB" else 1))
    arr = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(arr[..., 0] if mode == "L" else arr), fmt)


def class_files(n_classes: int = 3, per_class: int = 3, prefix: str = "", size: tuple[int, int] = (8, 8)
                ) -> list[tuple[str, bytes]]:
    """(relative path, PNG bytes) for a class-per-folder set: class c is colour c."""
    return [(f"{prefix}class{c}/img{k}.png", solid(COLOURS[c % len(COLOURS)], size, seed=10 * c + k))
            for c in range(n_classes) for k in range(per_class)]


def png_bytes(size: int = 16) -> bytes:
    """One PNG of the synthetic shapes the built-in `shapes` set draws (a query image for a trained run)."""
    from models.data.builtin import synthetic_images

    _, _, image = next(iter(synthetic_images(2, 2, size)))
    return encode(image)


def huge_png(side: int = 20_000) -> bytes:
    """A valid side × side 1-bit PNG of ~50 kB: decoding it would allocate side² bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
