"""Running a dataset import: the one path shared by the server's import worker, the CLI and the built-in sets.

An import is recorded first (`importing`), then an importer from models.data writes the dataset's folder while
progress goes to the store (and to the caller) and a cancel request is polled. It ends `ready` (with its
info) or `failed` (with the reasons; nothing it wrote remains), or, cancelled (a request, Ctrl-C), it is
discarded without a trace: no record, no folder, no upload. `server/import_jobs.py` runs `execute_import` in a
worker process for the API; `import_now` runs it in the calling process.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from models.errors import InvalidInput
from models.progress import Cancelled, CancelCheck, Progress, ProgressCallback, ignore_progress, never_cancel
from server.store import DatasetRecord, Store

if TYPE_CHECKING:
    from models.data import FileProgress, ImportReport

# An importer writing a new dataset folder: build(dest, on_file) -> ImportReport (models.data's import_*).
Build = Callable[[Path, "FileProgress"], "ImportReport"]
PROGRESS_EVERY_S = 0.25
_NAMES = "names.json"  # a stored folder upload: members "0", "1", ... and their names as the browser sent them


def execute_import(store: Store, dataset_id: str, build: Build, on_progress: ProgressCallback = ignore_progress,
                   should_cancel: CancelCheck = never_cancel) -> DatasetRecord:
    """Run `build` into the dataset's folder and conclude the record: `ready`, or `failed` when the data is
    unusable (models.data.DatasetError). Cancelled (Cancelled, KeyboardInterrupt): discarded, and re-raised; any
    other exception marks it failed and is re-raised (a bug or a full disk is not the data's fault)."""
    from models.data import DatasetError

    try:
        report = build(store.dataset_dir(dataset_id), _FileProgress(store, dataset_id, on_progress, should_cancel))
        store.upload_path(dataset_id).unlink(missing_ok=True)  # before `ready` is visible: no upload outlives it
        return store.finish_import(dataset_id, report)
    except DatasetError as exc:
        return store.fail_import(dataset_id, str(exc))  # which removes the upload and whatever was written
    except (Cancelled, KeyboardInterrupt):
        store.discard_import(dataset_id)
        raise
    except BaseException as exc:
        store.fail_import(dataset_id, f"the import stopped: {type(exc).__name__}: {exc}")
        raise


class _FileProgress:
    """models.data's per-file callback → a Progress at most every PROGRESS_EVERY_S (and at the last file),
    written to the store and handed to the caller; stops the import once a cancel was asked for."""

    def __init__(self, store: Store, dataset_id: str, on_progress: ProgressCallback, should_cancel: CancelCheck):
        self.store, self.dataset_id = store, dataset_id
        self.on_progress, self.should_cancel = on_progress, should_cancel
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        t = time.monotonic()
        if done < total and t - self.last < PROGRESS_EVERY_S:
            return
        self.last = t
        if self.should_cancel() or self.store.import_cancel_requested(self.dataset_id):
            raise Cancelled(f"the import of dataset {self.dataset_id} was cancelled")
        progress = Progress(stage="import", fraction=done / total, step=done, steps=total,
                            message=f"{done} of {total} files read")
        self.store.set_import_progress(self.dataset_id, progress.to_dict())
        self.on_progress(progress)


def import_now(store: Store, name: str, source: str, build: Build,
               on_progress: ProgressCallback = ignore_progress) -> DatasetRecord:
    """Import in this process (CLI, labels-only sets): the ready dataset, or the DatasetError that failed it,
    with nothing left behind."""
    return _run_here(store, store.begin_import(name, source).id, build, on_progress)


def _run_here(store: Store, dataset_id: str, build: Build, on_progress: ProgressCallback) -> DatasetRecord:
    from models.data import DatasetError

    rec = execute_import(store, dataset_id, build, on_progress)
    if rec.state == "failed":
        store.discard_import(rec.id)
        raise DatasetError(rec.error or "the import failed")
    return rec


def record_builtin(store: Store, name: str) -> tuple[DatasetRecord, bool]:
    """(the built-in dataset `name`'s record, whether it was recorded now and still has to be imported). A failed
    earlier import is forgotten; when two callers race, one records it and the other gets that record."""
    from models.data import BUILTIN_DATASETS

    if name not in BUILTIN_DATASETS:
        raise InvalidInput(f"unknown built-in dataset {name!r}; choose one of: {', '.join(sorted(BUILTIN_DATASETS))}")
    existing = store.builtin_dataset(name)
    if existing is not None and existing.state == "failed":
        store.discard_import(existing.id)
    elif existing is not None:
        return existing, False
    try:
        return store.begin_import(name, "builtin", builtin=name), True
    except sqlite3.IntegrityError:  # recorded by another caller in between
        return store.builtin_dataset(name) or store.get_dataset(name), False


def ensure_builtin(store: Store, name: str, on_progress: ProgressCallback = ignore_progress) -> DatasetRecord:
    """The built-in dataset `name`, imported in this process on first use (a few seconds for mnist5k)."""
    rec, new = record_builtin(store, name)
    return _run_here(store, rec.id, stored_build(store, rec), on_progress) if new else rec


def import_path(store: Store, path: Path, name: str | None = None,
                on_progress: ProgressCallback = ignore_progress) -> DatasetRecord:
    """Import a class-per-folder directory or a .zip from the local file system (CLI use)."""
    from models.data import import_folder, import_zip

    path, limits = Path(path), store.upload_limits()
    if path.is_dir():
        return import_now(store, name or path.resolve().name, "folder",
                          lambda dest, on_file: import_folder(path, dest, limits, on_file=on_file), on_progress)
    if path.is_file() and path.suffix.lower() == ".zip":
        return import_now(store, name or path.stem, "zip",
                          lambda dest, on_file: import_zip(path, dest, limits, on_file=on_file), on_progress)
    raise InvalidInput(f"{path} is neither a folder with one sub-folder per class nor a .zip file")


def import_benchmark(store: Store, kind: str, path: Path, name: str | None = None,
                     on_progress: ProgressCallback = ignore_progress) -> DatasetRecord:
    """Import a local copy of a DML benchmark in its published layout, with its predefined split (CLI and bench
    use: the path is the local user's, never a request's)."""
    from models.data import import_benchmark as read_benchmark

    limits = store.upload_limits()
    return import_now(store, name or f"{kind} ({Path(path).resolve().name})", "benchmark",
                      lambda dest, on_file: read_benchmark(kind, path, dest, limits, on_file=on_file), on_progress)


# ---- uploads: checked and stored by the request, imported by a worker -----------------------------------------
def stage_zip(store: Store, received: Path, name: str) -> DatasetRecord:
    """Check a received zip's directory (a broken or hostile archive, no class folders: the DatasetError, and
    nothing is recorded), then record the dataset `importing` and keep the zip as its upload."""
    from models.data import check_zip

    check_zip(received, store.upload_limits())
    rec = store.begin_import(name, "zip")
    try:
        os.replace(received, store.upload_path(rec.id))
    except BaseException:
        store.discard_import(rec.id)
        raise
    return rec


def stage_files(store: Store, files: list[tuple[str, bytes]], name: str) -> DatasetRecord:
    """Check a folder upload's names and sizes, then record the dataset `importing` and store its files as one
    uncompressed zip (the names kept verbatim in a manifest: they never become paths)."""
    from models.data import check_files

    check_files(files, store.upload_limits())
    rec = store.begin_import(name, "upload")
    tmp = store.temp_path(".partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(_NAMES, json.dumps([n for n, _ in files]))
            for i, (_, data) in enumerate(files):
                zf.writestr(str(i), data)
        os.replace(tmp, store.upload_path(rec.id))
    except BaseException:
        tmp.unlink(missing_ok=True)
        store.discard_import(rec.id)
        raise
    return rec


def _stored_files(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(name, zf.read(str(i))) for i, name in enumerate(json.loads(zf.read(_NAMES)))]


def stored_build(store: Store, rec: DatasetRecord) -> Build:
    """The importer for a recorded, not yet imported dataset: its stored upload, or its built-in set."""
    from models.data import import_builtin, import_files, import_zip

    upload, limits = store.upload_path(rec.id), store.upload_limits()
    if rec.source == "zip":
        return lambda dest, on_file: import_zip(upload, dest, limits, on_file=on_file)
    if rec.source == "upload":
        return lambda dest, on_file: import_files(_stored_files(upload), dest, limits, on_file=on_file)
    if rec.source == "builtin" and rec.builtin is not None:
        return lambda dest, on_file: import_builtin(rec.builtin, dest, on_file=on_file)
    raise InvalidInput(f"dataset {rec.id} ({rec.source}) has no stored upload to import")
