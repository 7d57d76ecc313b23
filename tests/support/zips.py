"""Dataset zips for upload tests: synthetic shapes, arbitrary (also hostile) members, and real digits."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

from tests.support.images import class_files, encode


def make_zip(num_classes: int = 4, per_class: int = 8, size: int = 16, extra: dict[str, bytes] | None = None) -> bytes:
    """A class-per-folder zip of synthetic shapes (real PNGs), plus optional extra members.

    Training tests keep runs tiny: 8×8 images would be too small for the CNN, so the shapes are 16 px."""
    from models.data.builtin import synthetic_images

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for _, path, image in synthetic_images(num_classes, per_class, size):
            zf.writestr(f"shapes/{path}", encode(image))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_of(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of exactly these (member name, bytes), names taken as given (so also `../x` or `/abs`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buf.getvalue()


def good_zip(n_classes: int = 3, per_class: int = 3, extra: list[tuple[str, bytes]] | None = None) -> bytes:
    """A sound class-per-folder zip of 8-px images (class c is colour c), plus `extra` (path, bytes) members."""
    return zip_of(class_files(n_classes, per_class) + (extra or []))


def symlink_zip(entries: list[tuple[str, bytes]], link_name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        info = zipfile.ZipInfo(link_name)
        info.external_attr = (0o120777 << 16)  # S_IFLNK: the member is a symbolic link to `target`
        zf.writestr(info, target)
    return buf.getvalue()


def patch_central_directory(data: bytes, member: str, *, file_size: int | None = None,
                            flag_bits: int | None = None) -> bytes:
    """Rewrite one member's declared size or flags in the central directory (and its local header): lying headers."""
    out = bytearray(data)
    name = member.encode()
    pos = out.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46: pos + 46 + name_len] == name:
            local = struct.unpack_from("<I", out, pos + 42)[0]
            if file_size is not None:
                struct.pack_into("<I", out, pos + 24, file_size)
                struct.pack_into("<I", out, local + 22, file_size)
            if flag_bits is not None:
                struct.pack_into("<H", out, pos + 8, flag_bits)
                struct.pack_into("<H", out, local + 6, flag_bits)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise KeyError(member)


def digits_zip(folder: Path, classes: int, per_class: int) -> Path:
    """A zip of the first `classes` classes of the built-in digits (exported by export_zip), `per_class` images
    each, plus one file the import must reject (`digits6/0/notes.txt`)."""
    from models.data import export_zip, import_builtin

    full = export_zip(import_builtin("digits", folder / "digits").image_set, folder / "all.zip")
    kept: dict[str, int] = {}
    out = folder / "digits6.zip"
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            cls = name.split("/")[0]
            if int(cls) < classes and kept.get(cls, 0) < per_class:
                kept[cls] = kept.get(cls, 0) + 1
                dst.writestr(f"digits6/{name}", src.read(name))
        dst.writestr("digits6/0/notes.txt", b"not an image")
    return out
