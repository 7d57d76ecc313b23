"""Untrusted input: member names, zip archives and image bytes, checked before anything is trusted.

Two kinds of failure, kept apart on purpose:
- an archive-level attack or malformation (path traversal, symlink, zip bomb, lying headers) raises
  `DatasetError`: the whole upload is rejected, since nothing else in it can be trusted either;
- a bad file inside a sound archive (not an image, truncated, too many pixels) raises `BadImage`, and the
  importer skips that file and lists it with the reason.
Images are identified by their content (Pillow restricted to six formats), never by their extension.
"""
from __future__ import annotations

import io
import re
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from models.data.errors import DatasetError

MiB = 1 << 20
GiB = 1 << 30

# Formats Pillow may decode. Restricting `Image.open(formats=...)` keeps exotic decoders (EPS runs
# Ghostscript, PSD, ...) out of reach of uploaded bytes.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# OS and tool litter: ignored silently, never reported as skipped.
_IGNORED_PARTS = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf\x27\x1c", b"Rar!", b"BZh")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Pillow's own bomb guard (a warning above 89 M pixels, an error above 179 M) is replaced by decode_image's
# check of the configured UploadLimits.max_image_pixels, made from the header before anything is decoded, so
# that the configured limit is the one that applies, and is the one named, above Pillow's default as below it.
# Every untrusted image is opened by decode_image; the other opens read this app's own stored files (its PNGs,
# and JPEGs kept byte for byte only after decode_image decoded them whole within the limits).
Image.MAX_IMAGE_PIXELS = None
_RATIO_MIN_BYTES = MiB  # the compression-ratio test applies from this uncompressed size up
_CHUNK = MiB
_ORIENTATION = 0x0112  # the EXIF tag exif_transpose applies


@dataclass(frozen=True)
class UploadLimits:
    """Bounds on what an upload may cost. Defaults fit the public benchmarks (SOP: 120 k images)."""

    max_archive_bytes: int = 4 * GiB  # the zip file itself (or the sum of uploaded files)
    max_total_bytes: int = 16 * GiB  # uncompressed sum of all members: declared, and counted while reading
    max_ratio: float = 200.0  # uncompressed / compressed per member (images barely compress; bombs reach 1000×)
    max_members: int = 250_000  # entries in the archive (or uploaded files), directories included
    max_image_pixels: int = 64_000_000  # width × height of one image, read from its header before decoding
    max_file_bytes: int = 64 * MiB  # one file; a larger one is skipped


def human_bytes(n: float) -> str:
    """1536 → "1.5 KiB": sizes in messages, readable whatever the configured limit."""
    units, k = ("bytes", "KiB", "MiB", "GiB"), 0
    while n >= 1024 and k < len(units) - 1:
        n, k = n / 1024, k + 1
    return f"{n:.0f} bytes" if k == 0 else f"{n:.1f} {units[k]}"


class BadImage(Exception):
    """One file that cannot be used; `reason` says why, for the import report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def file_too_big(size: int, limits: UploadLimits) -> BadImage:
    return BadImage(f"file is {human_bytes(size)}; the limit is {human_bytes(limits.max_file_bytes)} per file")


def clean_relative_path(name: str) -> tuple[str, ...] | None:
    """Split an untrusted relative name into NFC-normalised parts.

    Returns None for entries to ignore (directories, hidden files and folders, __MACOSX litter). Raises
    DatasetError for names that try to leave the upload (absolute, drive letter, `..`, backslash, control
    characters): such an upload was made to attack, or by a tool we cannot trust to have done the rest right.
    """
    parts = split_relative_path(name)
    return None if parts is None or is_ignored(parts) else parts


def split_relative_path(name: str) -> tuple[str, ...] | None:
    """`clean_relative_path` without leaving out hidden names: None only for directories."""
    if "\\" in name:
        raise DatasetError(f"entry {name!r} uses backslashes as path separators; "
                           "re-create the archive with a standard zip tool (forward slashes)")
    if _CONTROL.search(name):
        raise DatasetError(f"entry {name!r} contains control characters; rename it")
    if name.startswith("/") or _DRIVE.match(name):
        raise DatasetError(f"entry {name!r} is an absolute path; an upload may only hold relative paths")
    parts = [unicodedata.normalize("NFC", p) for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(f"entry {name!r} points outside the upload ('..'); it was rejected as unsafe")
    if name.endswith("/") or not parts:
        return None
    return tuple(parts)


def is_ignored(parts: tuple[str, ...] | list[str]) -> bool:
    """Hidden files and folders (".name") and OS litter (__MACOSX, Thumbs.db): left out of an import."""
    return any(p.startswith(".") or p in _IGNORED_PARTS for p in parts)


def hidden_folders(all_parts: Iterable[tuple[str, ...]]) -> dict[str, int]:
    """Hidden folders (".net", "...") that hold files, with how many: an import leaves them out, and a class
    folder named that way would otherwise vanish without a word. Hidden files and OS litter are not counted."""
    found: dict[str, int] = {}
    for parts in all_parts:
        if parts[-1].startswith(".") or any(p in _IGNORED_PARTS for p in parts):
            continue
        folder = next(("/".join(parts[:i + 1]) for i, p in enumerate(parts[:-1]) if p.startswith(".")), None)
        if folder is not None:
            found[folder] = found.get(folder, 0) + 1
    return found


def hidden_folder_warning(found: dict[str, int]) -> list[str]:
    if not found:
        return []
    names = ", ".join(repr(f) for f in sorted(found)[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return [f"{sum(found.values())} file(s) in hidden folders ({names}) were left out: a folder name starting with "
            "'.' marks it hidden; rename the folder to import its images"]


def _check_ratio(uncompressed: int, compressed: int, what: str, limits: UploadLimits) -> None:
    if uncompressed >= _RATIO_MIN_BYTES and uncompressed > limits.max_ratio * max(compressed, 1):
        raise DatasetError(f"{what} expands {uncompressed / max(compressed, 1):.0f}× when unpacked (limit "
                           f"{limits.max_ratio:.0f}×): this looks like a zip bomb. Real images rarely compress "
                           "that much; if yours do, raise the compression-ratio limit")


@dataclass(frozen=True)
class ZipMember:
    parts: tuple[str, ...]
    info: zipfile.ZipInfo

    @property
    def path(self) -> str:
        return "/".join(self.parts)


def open_zip(source: str | Path | bytes, limits: UploadLimits) -> tuple[zipfile.ZipFile, list[ZipMember]]:
    """Open an untrusted zip and check its central directory: size, member count, names, symlinks, bombs.

    Only the directory is read here; member contents are checked again while streaming (`read_zip_member`),
    because the directory's sizes are the attacker's to write.
    """
    try:
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    except OSError as exc:
        raise DatasetError(f"cannot read the archive {source} ({exc.strerror or exc})") from None
    if size > limits.max_archive_bytes:
        raise DatasetError(f"the archive is {human_bytes(size)}; the limit is {human_bytes(limits.max_archive_bytes)}: "
                           "split the data set or raise the upload limit")
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"not a readable zip archive ({exc}); upload a .zip with one folder per class") from None
    try:
        infos = zf.infolist()
        if not infos:
            raise DatasetError("the archive is empty; put one folder per class inside it")
        if len(infos) > limits.max_members:
            raise DatasetError(f"the archive has {len(infos)} entries; the limit is {limits.max_members}")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise DatasetError(f"the archive unpacks to {human_bytes(declared)}; the limit is "
                               f"{human_bytes(limits.max_total_bytes)}")
        _check_ratio(declared, sum(i.compress_size for i in infos), "the archive", limits)
        members, hidden = [], []
        for info in infos:
            parts = split_relative_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(f"entry {info.filename!r} is a symbolic link; upload plain files only")
            _check_ratio(info.file_size, info.compress_size, f"entry {info.filename!r}", limits)
            if parts is not None:
                (hidden if is_ignored(parts) else members).append(ZipMember(parts, info))
        if not members:
            raise DatasetError("the archive holds no files (only folders or hidden files); put one folder per class "
                               "inside it. " + " ".join(hidden_folder_warning(hidden_folders(m.parts for m in hidden))))
        return zf, members
    except BaseException:
        zf.close()
        raise


class ByteBudget:
    """Counts bytes actually read across an upload, so the total limit holds even if headers lie."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise DatasetError(f"the upload unpacks to more than {human_bytes(self.limit)} (the limit); "
                               "split the data set or raise the upload limit")


def read_zip_member(zf: zipfile.ZipFile, member: ZipMember, limits: UploadLimits, budget: ByteBudget) -> bytes:
    """Stream one member into memory, enforcing the per-file and total limits on the bytes really produced."""
    info = member.info
    if info.flag_bits & 0x1:
        raise BadImage("encrypted archive entry; upload it unencrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2/lzma decompress whole chunks without an output bound: a bomb could fill memory in one call.
        raise BadImage(f"compressed with method {info.compress_type}; only stored or deflated entries are read")
    if info.file_size > limits.max_file_bytes:
        raise file_too_big(info.file_size, limits)
    # CPython's reader stops at the directory's declared size and then checks the CRC, so a lying header ends
    # in a CRC error here; the budget counts what is really produced, whatever the headers said.
    out = bytearray()
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                out += chunk
                budget.take(len(chunk))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
        raise DatasetError(f"entry {member.path!r} is damaged ({exc}); the archive is corrupt or its headers "
                           "lie: re-create it") from None
    return bytes(out)


def iter_upload_files(files: list[tuple[str, bytes]], limits: UploadLimits
                      ) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """Check a browser folder upload (relative name, bytes) as a whole, then yield its non-ignored files."""
    if not files:
        raise DatasetError("no files were uploaded; pick a folder with one sub-folder per class")
    if len(files) > limits.max_members:
        raise DatasetError(f"{len(files)} files were uploaded; the limit is {limits.max_members}")
    total = sum(len(data) for _, data in files)
    if total > min(limits.max_total_bytes, limits.max_archive_bytes):
        raise DatasetError(f"the upload is {human_bytes(total)}; the limit is "
                           f"{human_bytes(min(limits.max_total_bytes, limits.max_archive_bytes))}")
    cleaned = [(clean_relative_path(name), data) for name, data in files]
    for parts, data in cleaned:
        if parts is not None:
            yield parts, data


class Decoded(NamedTuple):
    """A decoded untrusted image. `plain_jpeg`: the bytes are a JPEG whose plain decode (Image.open, then convert
    to "L"/"RGB") is exactly `image`: no EXIF rotation, colour conversion, alpha or reduced-scale decode was
    applied, so a store may keep them as they are instead of encoding `image` again."""

    image: Image.Image
    frames: int
    plain_jpeg: bool


def decode_image(data: bytes, limits: UploadLimits, max_side: int | None = None) -> Decoded:
    """Decode untrusted bytes into a canonical image: mode "L" or "RGB", EXIF rotation applied.

    Returns the image, the number of frames in the file (multi-frame files, animated GIF/WebP or multi-page
    TIFF, contribute their first frame) and whether the bytes are a plain JPEG (see Decoded). The pixel count is
    checked from the header *before* decoding, so a decompression bomb is never allocated, and the whole image
    is decoded here, so bytes kept as they are have passed a real decode. `max_side` lets JPEG decode at a
    reduced scale (draft mode) when the caller will downscale anyway. Raises BadImage with the reason.
    """
    if len(data) > limits.max_file_bytes:
        raise file_too_big(len(data), limits)
    if not data:
        raise BadImage("empty file")
    if data.startswith(_ARCHIVE_MAGIC):
        raise BadImage("an archive inside the upload; nested archives are not opened: unpack it into the class folder")
    try:
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise BadImage("not an image in a supported format (JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except Exception as exc:  # Pillow raises many types on malformed headers; any of them means "skip this file"
        raise BadImage(f"unreadable image header ({type(exc).__name__}: {exc})") from None
    width, height = im.size
    if width * height > limits.max_image_pixels:
        raise BadImage(f"{width}×{height} pixels exceeds the limit of {limits.max_image_pixels:,} pixels per image "
                       "(max_image_pixels, DMLSCOPE_MAX_IMAGE_PIXELS: a decompression-bomb guard); downscale it or "
                       "raise the limit")
    frames = int(getattr(im, "n_frames", 1))
    try:
        if frames > 1:
            im.seek(0)
        if im.format == "JPEG" and max_side and max(width, height) > 2 * max_side:
            im.draft(im.mode, (max_side, max_side))  # decode at 1/2..1/8 scale, never below max_side
        im.load()
        plain = (im.format == "JPEG" and frames == 1 and im.mode in ("L", "RGB") and im.size == (width, height)
                 and im.getexif().get(_ORIENTATION, 1) == 1)
        im = ImageOps.exif_transpose(im)
        return Decoded(to_canonical(im), frames, plain)
    except Exception as exc:  # truncated data, bad EXIF, broken palettes: all skip-worthy, none fatal
        raise BadImage(f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def to_canonical(im: Image.Image) -> Image.Image:
    """Any Pillow mode → "L" or "RGB" with 8 bits per channel, converting deep and exotic modes correctly.

    16-bit grey is scaled (÷257) rather than clipped as Pillow's convert would; float images are taken as
    0..255; alpha is composited over white (product-photo convention); CMYK uses the embedded ICC profile
    when there is one. Greyscale RGB is detected later, by content.
    """
    mode = im.mode
    if mode == "L":
        return im
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(np.clip(np.round(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8))
    if mode == "F":
        return Image.fromarray(np.clip(np.round(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8))
    if mode == "1":
        return im.convert("L")
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            return ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below is still a fair picture
    return im.convert("RGB")
