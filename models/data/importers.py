"""Class-per-folder imports: a local directory, a zip archive, or a browser folder upload.

All three become a list of sources (relative path parts + a reader), then share one path: find the class
folders (`<class>/<image>`, optionally under wrapper folders such as `mydata/`), drop duplicates, decode each
file safely and hand it to the ImageSetWriter. Class and file names are compared after Unicode NFC
normalisation and case folding, so `Café`/`Cafe\u0301` or `Cat`/`cat` are one class, as they would be on
macOS or Windows; the first spelling in sorted order is kept for display.
"""
from __future__ import annotations

import os
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Called after each file with (files done, files in all); it may raise (models.progress.Cancelled) to stop.
FileProgress = Callable[[int, int], None]

from models.data.errors import DatasetError, SkippedFile
from models.data.imageset import ImportReport
from models.data.safety import (BadImage, ByteBudget, UploadLimits, ZipMember, decode_image, file_too_big,
                                hidden_folder_warning, hidden_folders, is_ignored, iter_upload_files, open_zip,
                                read_zip_member, split_relative_path)
from models.data.writer import ImageSetWriter


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")


@dataclass(frozen=True)
class _Source:
    parts: tuple[str, ...]
    read: Callable[[], bytes]  # raises BadImage (skip this file) or DatasetError (reject the upload)


def import_folder(src: str | Path, dest: str | Path, limits: UploadLimits | None = None,
                  max_side: int = 256, on_file: FileProgress | None = None) -> ImportReport:
    """Import a local class-per-folder directory. Symlinked files are read; symlinked folders are not entered."""
    root = Path(src)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; give a folder with one sub-folder per class")
    limits = limits or UploadLimits()
    sources, hidden = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        hidden += [Path(dirpath, d) for d in dirnames if d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not is_ignored((d,))]
        for name in filenames:
            full = Path(dirpath) / name
            parts = tuple(unicodedata.normalize("NFC", p) for p in full.relative_to(root).parts)
            if not is_ignored(parts):
                sources.append(_Source(parts, lambda full=full: read_local(full, limits)))
    if not sources:
        raise DatasetError(f"{root} holds no files; put one folder of images per class inside it")
    return _import(sources, _hidden_folders_seen(root, hidden), dest, limits, max_side, on_file)


def import_zip(source: str | Path | bytes, dest: str | Path, limits: UploadLimits | None = None,
               max_side: int = 256, on_file: FileProgress | None = None) -> ImportReport:
    """Import an untrusted zip (a path or its bytes) holding one folder per class."""
    limits = limits or UploadLimits()
    zf, members = open_zip(source, limits)
    with zf:
        return _import(*_zip_sources(zf, members, limits), dest, limits, max_side, on_file)


def check_zip(source: str | Path | bytes, limits: UploadLimits | None = None) -> None:
    """Raise the DatasetError `import_zip` would raise before decoding anything (a broken or hostile archive, no
    class folders); cheap: it reads the archive's directory only."""
    limits = limits or UploadLimits()
    zf, members = open_zip(source, limits)
    with zf:
        _plan(*_zip_sources(zf, members, limits))


def _zip_sources(zf: zipfile.ZipFile, members: list[ZipMember],
                 limits: UploadLimits) -> tuple[list[_Source], list[str]]:
    budget = ByteBudget(limits.max_total_bytes)
    sources = [_Source(m.parts, lambda m=m: read_zip_member(zf, m, limits, budget)) for m in members]
    names = (split_relative_path(i.filename) for i in zf.infolist())
    return sources, hidden_folder_warning(hidden_folders(p for p in names if p))


def import_files(files: list[tuple[str, bytes]], dest: str | Path, limits: UploadLimits | None = None,
                 max_side: int = 256, on_file: FileProgress | None = None) -> ImportReport:
    """Import a browser folder upload: (relative path as `webkitRelativePath` gives it, file bytes) pairs."""
    limits = limits or UploadLimits()
    return _import(*_file_sources(files, limits), dest, limits, max_side, on_file)


def check_files(files: list[tuple[str, bytes]], limits: UploadLimits | None = None) -> None:
    """Raise the DatasetError `import_files` would raise before decoding anything (too many or too large files,
    no class folders)."""
    _plan(*_file_sources(files, limits or UploadLimits()))


def _file_sources(files: list[tuple[str, bytes]], limits: UploadLimits) -> tuple[list[_Source], list[str]]:
    sources = [_Source(parts, lambda data=data: data) for parts, data in iter_upload_files(files, limits)]
    names = (split_relative_path(name) for name, _ in files)
    hidden = hidden_folder_warning(hidden_folders(p for p in names if p))
    if not sources:
        raise DatasetError(" ".join(["the upload holds only hidden or system files; pick a folder with one folder "
                                     "per class.", *hidden]))
    return sources, hidden


def read_local(path: Path, limits: UploadLimits) -> bytes:
    try:
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise file_too_big(size, limits)
        return path.read_bytes()
    except OSError as exc:
        raise BadImage(f"cannot be read ({exc.strerror or exc})") from None


def _hidden_folders_seen(root: Path, folders: list[Path]) -> list[str]:
    """The warning for a local folder's hidden sub-folders, each with the files below it."""
    counts = {str(f.relative_to(root)): sum(len(files) for _, _, files in os.walk(f)) for f in folders}
    return hidden_folder_warning({f: n for f, n in counts.items() if n})


def _plan(sources: list[_Source], notes: list[str]) -> tuple[list[tuple[str, str, _Source]], list[SkippedFile],
                                                            list[str]]:
    """The files to decode, by class; `notes`: warnings about what was left out before this point (hidden
    folders), added to a refusal."""
    try:
        return _assign_classes(sources)
    except DatasetError as exc:
        raise DatasetError(" ".join([str(exc), *notes])) from None


def _import(sources: list[_Source], notes: list[str], dest: str | Path, limits: UploadLimits, max_side: int,
            on_file: FileProgress | None) -> ImportReport:
    items, skipped, warnings = _plan(sources, notes)
    with ImageSetWriter(dest, max_side) as writer:
        frames = []
        for done, (class_name, path, source) in enumerate(items, 1):
            frames.append(add_file(writer, class_name, path, source.read, limits, skipped))
            if on_file is not None:
                on_file(done, len(items))
        try:
            return writer.finish(skipped=skipped, warnings=notes + warnings + multi_frame_warning(frames))
        except DatasetError as exc:  # too few classes left: say which files fell out, and why
            raise DatasetError(" ".join([str(exc) + _skipped_summary(skipped), *notes])) from None


def _skipped_summary(skipped: list[SkippedFile], shown: int = 5) -> str:
    if not skipped:
        return ""
    listed = "; ".join(f"{s.path!r}: {s.reason}" for s in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f". {len(skipped)} file(s) were skipped: {listed}{more}"


def add_file(writer: ImageSetWriter, class_name: str, path: str, read: Callable[[], bytes], limits: UploadLimits,
             skipped: list[SkippedFile], train: bool | None = None, partition: str | None = None) -> int:
    """Decode one file into the writer, or list it in `skipped`; returns its frame count (0 when skipped)."""
    try:
        data = read()
        decoded = decode_image(data, limits, writer.max_side)
    except BadImage as exc:
        skipped.append(SkippedFile(path, exc.reason))
        return 0
    writer.add(class_name, path, decoded.image, train, partition, jpeg=data if decoded.plain_jpeg else None)
    return decoded.frames


def multi_frame_warning(frames: list[int]) -> list[str]:
    n = sum(f > 1 for f in frames)
    return [f"{n} multi-frame image(s) (animated GIF/WebP or multi-page TIFF): only the first frame of each "
            "was used"] if n else []


def _assign_classes(sources: list[_Source]) -> tuple[list[tuple[str, str, _Source]], list[SkippedFile], list[str]]:
    """Find `<class>/<image>` below any wrapper folders; report files elsewhere and duplicate names."""
    sources = sorted(sources, key=lambda s: s.parts)  # stable: among equal names the first stored wins
    depth = _wrapper_depth([s.parts for s in sources])
    items, skipped, warnings = [], [], []
    display: dict[str, str] = {}  # class key → the spelling shown
    seen: dict[tuple[str, str], str] = {}  # (class key, file key) → first path
    merged: set[tuple[str, str]] = set()
    for s in sources:
        path = "/".join(s.parts)
        rel = s.parts[depth:]
        if len(rel) != 2:
            where = "not inside a class folder" if len(rel) < 2 else f"in a sub-folder of class folder {rel[0]!r}"
            skipped.append(SkippedFile(path, f"{where}; expected <class>/<image>"))
            continue
        class_key, file_key = rel[0].casefold(), rel[1].casefold()
        name = display.setdefault(class_key, rel[0])
        if name != rel[0] and (name, rel[0]) not in merged:
            merged.add((name, rel[0]))
            warnings.append(f"class folders {name!r} and {rel[0]!r} differ only in letter case or Unicode form; "
                            f"merged into {name!r}")
        if (class_key, file_key) in seen:
            skipped.append(SkippedFile(path, f"same name as {seen[class_key, file_key]!r} after Unicode and "
                                             "letter-case normalisation; rename one of them"))
            continue
        seen[class_key, file_key] = path
        items.append((name, path, s))
    classes = sorted(set(display.values()))
    if not classes:
        archives = ["/".join(s.parts) for s in sources if s.parts[-1].lower().endswith(_ARCHIVE_SUFFIXES)]
        nested = (f"; {archives[0]!r} is an archive inside the upload, and archives inside are not opened: unpack "
                  "it and upload its folders" if archives else "")
        raise DatasetError("no class folders found: put each class's images in its own folder "
                           f"(<class>/<image>), optionally inside one top folder{nested}")
    if len(classes) < 2:
        raise DatasetError(f"found only one class folder ({classes[0]!r}); need at least 2 classes, "
                           "each a folder with 2 or more images")
    return items, skipped, warnings


def _wrapper_depth(all_parts: list[tuple[str, ...]]) -> int:
    """How many leading folders wrap the class folders: shared by every file, with some file below them."""
    depth = 0
    while (all(len(p) > depth + 1 for p in all_parts) and len({p[depth] for p in all_parts}) == 1
           and any(len(p) > depth + 2 for p in all_parts)):
        depth += 1
    return depth
