"""The dataset half of the store: the datasets table, imports into dataset folders, upload limits and the
decoded-ImageSet cache."""
from __future__ import annotations

import json
import shutil
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import Conflict, InvalidInput
from server.folder_lock import StoreLock
from server.settings import Settings
from server.store.base import StoreBase, check_id, new_id, now, remove_tree
from server.store.runs import ACTIVE

if TYPE_CHECKING:
    from models.data import ImageSet, ImportReport


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    name: str
    source: str  # builtin | upload | zip | folder | benchmark | embeddings (labels only, no images)
    builtin: str | None
    created_at: str
    info: dict[str, Any]  # num_images, num_classes, classes, channels, native_size, skipped, warnings, ...


def _dataset_info(report: "ImportReport") -> dict[str, Any]:
    s = report.image_set
    counts = [int((s.labels == i).sum()) for i in range(len(s.class_names))]
    return {
        "num_images": len(s), "num_classes": len(s.class_names), "channels": int(s.channels),
        "native_size": s.native_size, "classes": [{"name": n, "count": c} for n, c in zip(s.class_names, counts)],
        "has_predefined_split": s.split is not None, "has_images": s.has_images,
        "predefined_split": None if s.split is None else {
            "train_images": int(s.split.sum()), "test_images": int((~s.split).sum()),
            "train_classes": len(set(s.labels[s.split].tolist())), "test_classes": len(set(s.labels[~s.split].tolist()))},
        "skipped": [{"path": k.path, "reason": k.reason} for k in report.skipped],
        "warnings": list(report.warnings),
    }


class DatasetStore(StoreBase):
    """Datasets: records, imports, limits, the ImageSet cache (mixed into `Store`)."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, folder: StoreLock):
        super().__init__(settings, conn, folder)
        self._image_sets: OrderedDict[str, "ImageSet"] = OrderedDict()

    def _dataset(self, row: sqlite3.Row) -> DatasetRecord:
        return DatasetRecord(row["id"], row["name"], row["source"], row["builtin"], row["created_at"],
                             json.loads(row["info"]))

    def list_datasets(self) -> list[DatasetRecord]:
        return [self._dataset(r) for r in self._rows("SELECT * FROM datasets ORDER BY created_at DESC, rowid DESC")]

    def get_dataset(self, id_or_prefix: str) -> DatasetRecord:
        return self._dataset(self._by_prefix("datasets", "dataset", id_or_prefix))

    def _add_dataset(self, name: str, source: str, build: Any, builtin: str | None = None) -> DatasetRecord:
        """Run `build(dest)` (an importer from models.data) into a fresh folder, then record the result."""
        dataset_id = new_id()
        dest = self.dataset_dir(dataset_id)
        try:
            report = build(dest)
            rec = DatasetRecord(dataset_id, name, source, builtin, now(), _dataset_info(report))
            self._exec("INSERT INTO datasets (id, name, source, builtin, created_at, info) VALUES (?, ?, ?, ?, ?, ?)",
                       (rec.id, rec.name, rec.source, rec.builtin, rec.created_at, json.dumps(rec.info)))
        except BaseException:  # rejected (a DatasetError), disk full, database full: no folder outlives a missing row
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return rec

    def ensure_builtin(self, name: str) -> DatasetRecord:
        """The built-in dataset `name`, imported on first use (a few seconds for mnist5k)."""
        from models.data import BUILTIN_DATASETS, import_builtin

        if name not in BUILTIN_DATASETS:
            raise InvalidInput(f"unknown built-in dataset {name!r}; choose one of: "
                               f"{', '.join(sorted(BUILTIN_DATASETS))}")
        with self._lock:  # one import per name even when two callers race
            rows = self._rows("SELECT * FROM datasets WHERE builtin = ?", (name,))
            if rows:
                return self._dataset(rows[0])
            return self._add_dataset(name, "builtin", lambda dest: import_builtin(name, dest), builtin=name)

    def import_path(self, path: Path, name: str | None = None) -> DatasetRecord:
        """Import a class-per-folder directory or a .zip from the local file system (CLI use)."""
        from models.data import import_folder, import_zip

        path = Path(path)
        if path.is_dir():
            return self._add_dataset(name or path.resolve().name, "folder",
                                     lambda dest: import_folder(path, dest, self.upload_limits()))
        if path.is_file() and path.suffix.lower() == ".zip":
            return self._add_dataset(name or path.stem, "zip", lambda dest: import_zip(path, dest, self.upload_limits()))
        raise InvalidInput(f"{path} is neither a folder with one sub-folder per class nor a .zip file")

    def import_benchmark(self, kind: str, path: Path, name: str | None = None) -> DatasetRecord:
        """Import a local copy of a DML benchmark in its published layout, with its predefined split (CLI use:
        the path is the local user's, never a request's)."""
        from models.data import import_benchmark

        return self._add_dataset(name or f"{kind} ({Path(path).resolve().name})", "benchmark",
                                 lambda dest: import_benchmark(kind, path, dest, self.upload_limits()))

    def import_zip_upload(self, zip_path: Path, name: str) -> DatasetRecord:
        from models.data import import_zip

        return self._add_dataset(name, "zip", lambda dest: import_zip(zip_path, dest, self.upload_limits()))

    def import_files_upload(self, files: list[tuple[str, bytes]], name: str) -> DatasetRecord:
        from models.data import import_files

        return self._add_dataset(name, "upload", lambda dest: import_files(files, dest, self.upload_limits()))

    def add_labels_only(self, name: str, build: Any) -> DatasetRecord:
        """A dataset of labels without images (models.embeddings_import.write_labels_only_set), for embeddings."""
        return self._add_dataset(name, "embeddings", build)

    def upload_limits(self) -> Any:
        """models.data.UploadLimits from the settings: the archive may be as large as a request body."""
        from models.data import UploadLimits

        s, mib = self.settings, 1 << 20
        return UploadLimits(max_archive_bytes=s.max_request_mb * mib, max_total_bytes=s.max_unpacked_mb * mib,
                            max_ratio=s.max_zip_ratio, max_members=s.max_upload_files,
                            max_image_pixels=s.max_image_pixels, max_file_bytes=s.max_file_mb * mib)

    def image_set(self, dataset_id: str) -> "ImageSet":
        """The dataset's ImageSet, kept in a small LRU so decoded pixels are reused across requests."""
        from models.data import ImageSet

        self.get_dataset(dataset_id)
        with self._lock:
            if dataset_id in self._image_sets:
                self._image_sets.move_to_end(dataset_id)
                return self._image_sets[dataset_id]
            image_set = ImageSet(self.dataset_dir(dataset_id))
            self._image_sets[dataset_id] = image_set
            while len(self._image_sets) > 4:
                self._image_sets.popitem(last=False)
            return image_set

    def delete_dataset(self, dataset_id: str, force: bool = False) -> None:
        rec = self.get_dataset(check_id(dataset_id, "dataset"))
        with self._lock:
            runs = self.list_runs(dataset_id=rec.id)
            active = [r.id for r in runs if r.status in ACTIVE]
            if active:
                raise Conflict(f"dataset {rec.id} has {len(active)} queued or running run(s) ({', '.join(active)}); "
                               f"cancel them first")
            if runs and not force:
                raise Conflict(f"dataset {rec.id} is used by {len(runs)} run(s); delete them first or pass force=true")
            for r in runs:
                self.delete_run(r.id)
            self._exec("DELETE FROM datasets WHERE id = ?", (rec.id,))
            self._image_sets.pop(rec.id, None)
        remove_tree(self.dataset_dir(rec.id))

    def run_count(self, dataset_id: str) -> int:
        return self._rows("SELECT COUNT(*) FROM runs WHERE dataset_id = ?", (dataset_id,))[0][0]
