"""The dataset half of the store: the datasets table and its import states, the dataset folders, upload limits
and the decoded-ImageSet cache.

A dataset is recorded when its import begins (`importing`, with progress), then becomes `ready` (with its
info) or `failed` (with the reasons); a cancelled import is discarded without a trace. Running an import is
server/imports.py's job; this module only records it.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import Conflict
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
    state: str = "ready"  # importing | ready | failed
    error: str | None = None  # failed: why, and what to change
    progress: dict[str, Any] | None = None  # importing: the last models.progress.Progress dict


IMPORT_STATES = ("importing", "ready", "failed")
# The info of a dataset whose import has not succeeded: nothing is known about its images yet.
EMPTY_INFO: dict[str, Any] = {"num_images": 0, "num_classes": 0, "channels": 0, "native_size": None, "classes": [],
                              "has_predefined_split": False, "has_images": True, "predefined_split": None,
                              "skipped": [], "warnings": []}
IMPORT_INTERRUPTED = "the server stopped while this dataset was importing; delete it and upload it again"


def _dataset_info(report: "ImportReport") -> dict[str, Any]:
    s = report.image_set
    counts = np.bincount(np.asarray(s.labels, dtype=np.int64), minlength=len(s.class_names)).tolist()  # linear in N
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
    """Datasets: records and import states, folders, limits, the ImageSet cache (mixed into `Store`)."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, folder: StoreLock):
        super().__init__(settings, conn, folder)
        self._image_sets: OrderedDict[str, "ImageSet"] = OrderedDict()

    def _dataset(self, row: sqlite3.Row) -> DatasetRecord:
        return DatasetRecord(row["id"], row["name"], row["source"], row["builtin"], row["created_at"],
                             json.loads(row["info"]), row["state"], row["error"],
                             None if row["progress"] is None else json.loads(row["progress"]))

    def list_datasets(self, state: str | None = None) -> list[DatasetRecord]:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        return [self._dataset(r) for r in self._rows(f"SELECT * FROM datasets {where} "
                                                     "ORDER BY created_at DESC, rowid DESC", args)]

    def get_dataset(self, id_or_prefix: str) -> DatasetRecord:
        return self._dataset(self._by_prefix("datasets", "dataset", id_or_prefix))

    def find_dataset(self, dataset_id: str) -> DatasetRecord | None:
        """The dataset with exactly this id, or None once it is gone (a discarded import)."""
        rows = self._rows("SELECT * FROM datasets WHERE id = ?", (dataset_id,))
        return self._dataset(rows[0]) if rows else None

    def builtin_dataset(self, name: str) -> DatasetRecord | None:
        rows = self._rows("SELECT * FROM datasets WHERE builtin = ?", (name,))
        return self._dataset(rows[0]) if rows else None

    def ready_dataset(self, id_or_prefix: str) -> DatasetRecord:
        """The dataset, if its import has succeeded: training, exploring and listing images need its images."""
        rec = self.get_dataset(id_or_prefix)
        if rec.state == "importing":
            done = f" ({rec.progress['fraction']:.0%} done)" if rec.progress else ""
            raise Conflict(f"dataset {rec.id} is still importing{done}; wait until it is ready "
                           f"(GET /api/datasets/{rec.id}/events follows its progress)")
        if rec.state == "failed":
            raise Conflict(f"dataset {rec.id} failed to import ({rec.error}); delete it and import it again")
        return rec

    # ---- import states --------------------------------------------------------------------------------
    def begin_import(self, name: str, source: str, builtin: str | None = None) -> DatasetRecord:
        """Record a dataset in state `importing`; raises sqlite3.IntegrityError when `builtin` is recorded."""
        rec = DatasetRecord(new_id(), name, source, builtin, now(), EMPTY_INFO, "importing")
        self._exec("INSERT INTO datasets (id, name, source, builtin, created_at, info, state) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (rec.id, rec.name, rec.source, rec.builtin, rec.created_at, json.dumps(rec.info), rec.state))
        return rec

    def upload_path(self, dataset_id: str) -> Path:
        """Where an upload waits for its import (a zip; a folder upload is stored as one)."""
        return self.root / "tmp" / f"{check_id(dataset_id, 'dataset')}.upload"

    def set_import_progress(self, dataset_id: str, progress: dict[str, Any]) -> None:
        self._exec("UPDATE datasets SET progress=? WHERE id=? AND state='importing'",
                   (json.dumps(progress), dataset_id))

    def finish_import(self, dataset_id: str, report: "ImportReport") -> DatasetRecord:
        self._exec("UPDATE datasets SET state='ready', info=?, progress=NULL WHERE id=?",
                   (json.dumps(_dataset_info(report)), dataset_id))
        return self.get_dataset(dataset_id)

    def fail_import(self, dataset_id: str, error: str) -> DatasetRecord:
        """Mark the import failed with `error` and remove whatever it had written (the record stays to say why)."""
        self._exec("UPDATE datasets SET state='failed', error=?, progress=NULL WHERE id=?", (error, dataset_id))
        self._remove_import_files(dataset_id)
        return self.get_dataset(dataset_id)

    def discard_import(self, dataset_id: str) -> None:
        """Remove an import without a trace: its record, its folder, its temp folders and its upload (a dataset
        that became ready first is kept)."""
        deleted = self._exec("DELETE FROM datasets WHERE id=? AND state!='ready'", (dataset_id,))
        if deleted or self.find_dataset(dataset_id) is None:
            self._remove_import_files(dataset_id)

    def _remove_import_files(self, dataset_id: str) -> None:
        self.upload_path(dataset_id).unlink(missing_ok=True)
        remove_tree(self.dataset_dir(dataset_id))
        for partial in (self.root / "datasets").glob(f".{dataset_id}.*"):  # ImageSetWriter's folder in the making
            shutil.rmtree(partial, ignore_errors=True)

    def request_import_cancel(self, dataset_id: str) -> None:
        self._exec("UPDATE datasets SET cancel_requested=1 WHERE id=? AND state='importing'", (dataset_id,))

    def import_cancel_requested(self, dataset_id: str) -> bool:
        """True once a cancel was asked for, or when the record is gone."""
        rows = self._rows("SELECT cancel_requested FROM datasets WHERE id=?", (dataset_id,))
        return not rows or bool(rows[0][0])

    def mark_interrupted_imports(self) -> list[str]:
        """At start-up: imports left `importing` by a previous server process failed. Only while this process
        holds the folder alone (a CLI command's import is `importing` while it runs)."""
        if not self.folder.exclusive:
            return []
        ids = [r[0] for r in self._rows("SELECT id FROM datasets WHERE state='importing'")]
        for dataset_id in ids:
            self.fail_import(dataset_id, IMPORT_INTERRUPTED)
        return ids

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

        self.ready_dataset(dataset_id)
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
        if rec.state == "importing":
            raise Conflict(f"dataset {rec.id} is importing; cancel the import instead "
                           f"(POST /api/datasets/{rec.id}/cancel)")
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
