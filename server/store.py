"""The store: SQLite metadata (datasets, runs) plus artifact folders under the data directory.

Layout: `<data>/dmlscope.sqlite3` (WAL), `<data>/datasets/<id>/` (an imported ImageSet), `<data>/runs/<id>/`
(the `execute_run` folder), `<data>/tmp/` (uploads being imported). Ids are generated here and checked against
`ID_PATTERN` before they ever touch a path, so no user-supplied text reaches the file system.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.config import RunConfig
from server.errors import BadRequest, Conflict, NotFound
from server.folder_lock import StoreLock
from server.settings import Settings

if TYPE_CHECKING:
    from models.data import ImageSet, ImportReport

ID_PATTERN = r"^[0-9a-f]{12}$"
_ID_RE = re.compile(ID_PATTERN)
_PREFIX_RE = re.compile(r"^[0-9a-f]{1,12}$")
ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled", "interrupted")
STATUSES = ACTIVE + TERMINAL

# Migrations by version: entry i brings the schema from user_version i to i + 1. Append, never edit.
_MIGRATIONS = [
    """
    CREATE TABLE datasets (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        builtin TEXT UNIQUE,
        created_at TEXT NOT NULL,
        info TEXT NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id),
        parent_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
        name TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        origin TEXT NOT NULL DEFAULT 'train',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        progress TEXT,
        summary TEXT
    );
    CREATE INDEX runs_by_dataset ON runs(dataset_id);
    CREATE INDEX runs_by_status ON runs(status);
    """,
    # v2: sweeps, and which runs each sweep launched (server/sweeps_store.py reads and writes both tables)
    """
    CREATE TABLE sweeps (
        id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        name TEXT NOT NULL, spec TEXT NOT NULL, state TEXT, status TEXT NOT NULL, error TEXT,
        finished INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, finished_at TEXT, report TEXT);
    CREATE TABLE sweep_runs (
        sweep_id TEXT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE, key TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, plan TEXT NOT NULL,
        PRIMARY KEY (sweep_id, key));
    CREATE INDEX sweep_runs_by_run ON sweep_runs(run_id);
    """,
]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_id(value: str, kind: str) -> str:
    if not _ID_RE.match(value):
        raise NotFound(f"{kind} {value!r} does not exist (ids are 12 hex characters)")
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    name: str
    source: str  # builtin | upload | zip | folder | benchmark | embeddings (labels only, no images)
    builtin: str | None
    created_at: str
    info: dict[str, Any]  # num_images, num_classes, classes, channels, native_size, skipped, warnings, ...


@dataclass(frozen=True)
class RunRecord:
    id: str
    dataset_id: str
    parent_id: str | None
    name: str
    config: dict[str, Any]  # a RunConfig dump; validate with run_config() when you need the object
    status: str
    error: str | None
    origin: str  # train | import | embeddings
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, Any] | None
    summary: dict[str, Any] | None

    def run_config(self) -> RunConfig:
        return RunConfig.model_validate(self.config)


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


class Store:
    """Thread-safe access to the metadata database and the artifact folders of one data directory."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, folder: StoreLock):
        self.settings = settings
        self.folder = folder  # shared hold on the data folder; `folder.alone()` for the server's start-up cleanup
        self.root = settings.data_dir
        self._conn = conn
        self._lock = threading.RLock()
        self._image_sets: OrderedDict[str, "ImageSet"] = OrderedDict()

    @classmethod
    def open(cls, settings: Settings) -> "Store":
        """Create the data folder if needed, hold it shared, open the database in WAL mode and migrate it."""
        folder = StoreLock(settings.data_dir)
        for sub in ("datasets", "runs", "tmp"):
            (settings.data_dir / sub).mkdir(parents=True, exist_ok=True)
        settings.database_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(settings.database_path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        store = cls(settings, conn, folder)
        store._migrate()
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self.folder.release()

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise RuntimeError(f"database {self.settings.database_path} has schema version {version}, newer than "
                                   f"this dmlscope ({len(_MIGRATIONS)}); upgrade dmlscope or use another data dir")
            for v in range(version, len(_MIGRATIONS)):
                self._conn.executescript(f"BEGIN; {_MIGRATIONS[v]}; PRAGMA user_version = {v + 1}; COMMIT;")

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    # ---- paths ----------------------------------------------------------------------------------------
    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / "datasets" / check_id(dataset_id, "dataset")

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_id(run_id, "run")

    def temp_path(self, suffix: str = "") -> Path:
        return self.root / "tmp" / f"{new_id()}{suffix}"

    # ---- datasets -------------------------------------------------------------------------------------
    def _dataset(self, row: sqlite3.Row) -> DatasetRecord:
        return DatasetRecord(row["id"], row["name"], row["source"], row["builtin"], row["created_at"],
                             json.loads(row["info"]))

    def list_datasets(self) -> list[DatasetRecord]:
        return [self._dataset(r) for r in self._rows("SELECT * FROM datasets ORDER BY created_at DESC, rowid DESC")]

    def get_dataset(self, id_or_prefix: str) -> DatasetRecord:
        return self._dataset(self._by_prefix("datasets", "dataset", id_or_prefix))

    def _by_prefix(self, table: str, kind: str, id_or_prefix: str) -> sqlite3.Row:
        if not _PREFIX_RE.match(id_or_prefix):
            raise NotFound(f"{kind} {id_or_prefix!r} does not exist (ids are 12 hex characters)")
        rows = self._rows(f"SELECT * FROM {table} WHERE id LIKE ? ORDER BY id LIMIT 3", (id_or_prefix + "%",))
        if not rows:
            raise NotFound(f"{kind} {id_or_prefix!r} does not exist")
        if len(rows) > 1 and rows[0]["id"] != id_or_prefix:
            raise BadRequest(f"{kind} id prefix {id_or_prefix!r} is ambiguous ({rows[0]['id']}, {rows[1]['id']}, "
                             f"...); give more characters")
        return rows[0]

    def _add_dataset(self, name: str, source: str, build: Any, builtin: str | None = None) -> DatasetRecord:
        """Run `build(dest)` (an importer from models.data) into a fresh folder, then record the result."""
        from models.data import DatasetError

        dataset_id = new_id()
        dest = self.dataset_dir(dataset_id)
        try:
            report = build(dest)
            rec = DatasetRecord(dataset_id, name, source, builtin, now(), _dataset_info(report))
            self._exec("INSERT INTO datasets (id, name, source, builtin, created_at, info) VALUES (?, ?, ?, ?, ?, ?)",
                       (rec.id, rec.name, rec.source, rec.builtin, rec.created_at, json.dumps(rec.info)))
        except BaseException as e:  # rejected, disk full, database full: no folder may outlive a missing row
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(e, DatasetError):
                raise BadRequest(str(e)) from e
            raise
        return rec

    def ensure_builtin(self, name: str) -> DatasetRecord:
        """The built-in dataset `name`, imported on first use (a few seconds for mnist5k)."""
        from models.data import BUILTIN_DATASETS, import_builtin

        if name not in BUILTIN_DATASETS:
            raise BadRequest(f"unknown built-in dataset {name!r}; choose one of: {', '.join(sorted(BUILTIN_DATASETS))}")
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
        raise BadRequest(f"{path} is neither a folder with one sub-folder per class nor a .zip file")

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
        _remove_tree(self.dataset_dir(rec.id))

    def run_count(self, dataset_id: str) -> int:
        return self._rows("SELECT COUNT(*) FROM runs WHERE dataset_id = ?", (dataset_id,))[0][0]

    # ---- runs -----------------------------------------------------------------------------------------
    def _run(self, row: sqlite3.Row) -> RunRecord:
        def load(col: str) -> Any:
            return None if row[col] is None else json.loads(row[col])

        return RunRecord(row["id"], row["dataset_id"], row["parent_id"], row["name"], json.loads(row["config"]),
                         row["status"], row["error"], row["origin"], bool(row["cancel_requested"]), row["created_at"],
                         row["started_at"], row["finished_at"], load("progress"), load("summary"))

    def create_run(self, dataset_id: str, config: RunConfig, name: str | None = None, parent_id: str | None = None,
                   origin: str = "train", status: str = "queued") -> RunRecord:
        """Record a run and create its (empty) folder; the caller then executes or queues it."""
        dataset = self.get_dataset(check_id(dataset_id, "dataset"))
        if parent_id is not None:
            self.get_run(check_id(parent_id, "run"))
        if status not in STATUSES:
            raise BadRequest(f"status {status!r} is not one of {', '.join(STATUSES)}")
        run_id = new_id()
        name = name or _default_run_name(config, dataset.name)
        stamp = now()
        self._exec("INSERT INTO runs (id, dataset_id, parent_id, name, config, status, origin, created_at, started_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (run_id, dataset.id, parent_id, name, config.model_dump_json(), status, origin, stamp,
                    stamp if status == "running" else None))
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return self.get_run(run_id)

    def get_run(self, id_or_prefix: str) -> RunRecord:
        return self._run(self._by_prefix("runs", "run", id_or_prefix))

    def list_runs(self, dataset_id: str | None = None, status: str | None = None) -> list[RunRecord]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if dataset_id is not None:
            sql, args = sql + " AND dataset_id = ?", [*args, dataset_id]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return [self._run(r) for r in self._rows(sql + " ORDER BY created_at DESC, rowid DESC", tuple(args))]

    def queued_run_ids(self) -> list[str]:
        """Oldest first: the order the job manager starts them in."""
        return [r[0] for r in self._rows("SELECT id FROM runs WHERE status = 'queued' ORDER BY created_at, rowid")]

    def set_status(self, run_id: str, status: str, error: str | None = None) -> RunRecord:
        """Move a run to `status`, stamping started_at (running) or finished_at (terminal states)."""
        if status not in STATUSES:
            raise BadRequest(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if status == "running":
            sql = "UPDATE runs SET status=?, error=?, cancel_requested=0, started_at=?, finished_at=NULL WHERE id=?"
            args: tuple = (status, error, now(), run_id)
        elif status == "queued":
            sql = "UPDATE runs SET status=?, error=?, cancel_requested=0, finished_at=NULL WHERE id=?"
            args = (status, error, run_id)
        else:
            sql = "UPDATE runs SET status=?, error=?, finished_at=? WHERE id=?"
            args = (status, error, now(), run_id)
        if self._exec(sql, args) == 0:
            raise NotFound(f"run {run_id!r} does not exist")
        return self.get_run(run_id)

    def request_cancel(self, run_id: str) -> None:
        self._exec("UPDATE runs SET cancel_requested=1 WHERE id=?", (run_id,))

    def set_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self._exec("UPDATE runs SET progress=? WHERE id=?", (json.dumps(progress), run_id))

    def set_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self._exec("UPDATE runs SET summary=? WHERE id=?", (json.dumps(summary), run_id))

    def remove_leftovers(self) -> list[str]:
        """At server start-up: delete what a killed process left half-done, so nothing half-written is ever listed.

        That is every upload in `tmp/`, the temp folders of imports and deletions (`.<name>...`), dataset and
        run folders without a database row (an import killed between its rename and its INSERT), and the temp
        files of atomic writes inside the kept folders. Returns the removed paths, relative to the data folder.
        Does nothing unless this process holds the folder alone (`with store.folder.alone()`): a CLI command
        importing or training in the same folder would lose its work.
        """
        if not self.folder.exclusive:
            return []
        removed = [p for p in (self.root / "tmp").iterdir()]
        for table in ("datasets", "runs"):
            known = {r[0] for r in self._rows(f"SELECT id FROM {table}")}
            for p in (self.root / table).iterdir():
                if p.name not in known:
                    removed.append(p)  # hidden temp folders and orphans; well-formed or not, nothing refers to it
                elif p.is_dir():
                    removed += [f for f in p.iterdir() if f.name.startswith(".") and f.name.endswith(".tmp")]
        for p in removed:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return [str(p.relative_to(self.root)) for p in removed]

    def mark_interrupted(self) -> list[str]:
        """At start-up: runs left `running` by a previous server process were interrupted. Only while this
        process holds the folder alone (a CLI command's run is `running` while it trains)."""
        if not self.folder.exclusive:
            return []
        with self._lock:
            ids = [r[0] for r in self._rows("SELECT id FROM runs WHERE status='running'")]
            self._exec("UPDATE runs SET status='interrupted', error=?, finished_at=? WHERE status='running'",
                       ("the server stopped while this run was training; resume it to continue from the last "
                        "saved epoch", now()))
        return ids

    def delete_run(self, run_id: str) -> None:
        rec = self.get_run(check_id(run_id, "run"))
        if rec.status in ACTIVE:
            raise Conflict(f"run {rec.id} is {rec.status}; cancel it before deleting it")
        self._exec("DELETE FROM runs WHERE id = ?", (rec.id,))
        _remove_tree(self.run_dir(rec.id))


def _remove_tree(path: Path) -> None:
    """Rename first, then delete: a crash half-way leaves a hidden folder, never a half-deleted artifact."""
    if not path.exists():
        return
    trash = path.with_name(f".deleted-{path.name}-{new_id()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _default_run_name(config: RunConfig, dataset_name: str) -> str:
    parts = [config.loss.name, config.distance.name]
    if config.flow.enabled:
        parts.append("flow")
    parts += [r.name for r in config.regularizers]
    return f"{' + '.join(parts)} on {dataset_name}"
