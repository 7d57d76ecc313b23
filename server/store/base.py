"""The store's shared base: the SQLite connection (WAL) and its migrations, ids, paths, atomic writes and the
start-up clean-up of what a killed process left half-done.

Layout: `<data>/dmlscope.sqlite3` (WAL), `<data>/datasets/<id>/` (an imported ImageSet), `<data>/runs/<id>/`
(the `execute_run` folder), `<data>/tmp/` (uploads being imported). Ids are generated here and checked against
`ID_PATTERN` before they ever touch a path, so no user-supplied text reaches the file system.
"""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Self

from models.errors import InvalidInput, NotFound
from models.runfolder import atomic_write
from server.folder_lock import StoreLock
from server.settings import Settings

ID_PATTERN = r"^[0-9a-f]{12}$"
_ID_RE = re.compile(ID_PATTERN)
_PREFIX_RE = re.compile(r"^[0-9a-f]{1,12}$")

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
    # v3: how many processes execute a run (torchrun when > 1), and its recent progress events, numbered
    # (server/lifecycle.py StoreProgress writes them, the job manager streams them)
    """
    ALTER TABLE runs ADD COLUMN processes INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE runs ADD COLUMN progress_log TEXT;
    """,
    # v4: imports are jobs (server/imports.py): a dataset is importing, ready or failed (with why)
    """
    ALTER TABLE datasets ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';
    ALTER TABLE datasets ADD COLUMN error TEXT;
    ALTER TABLE datasets ADD COLUMN progress TEXT;
    ALTER TABLE datasets ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX datasets_by_state ON datasets(state);
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
    """Bytes through the one atomic writer (`models.runfolder.atomic_write`): readers never see half a file."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def remove_tree(path: Path) -> None:
    """Rename first, then delete: a crash half-way leaves a hidden folder, never a half-deleted artifact."""
    if not path.exists():
        return
    trash = path.with_name(f".deleted-{path.name}-{new_id()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


class StoreBase:
    """The connection, schema, locking and paths every part of the store shares (thread-safe)."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, folder: StoreLock):
        self.settings = settings
        self.folder = folder  # shared hold on the data folder; `folder.alone()` for the server's start-up cleanup
        self.root = settings.data_dir
        self._conn = conn
        self._lock = threading.RLock()

    @classmethod
    def open(cls, settings: Settings) -> Self:
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

    def _by_prefix(self, table: str, kind: str, id_or_prefix: str) -> sqlite3.Row:
        if not _PREFIX_RE.match(id_or_prefix):
            raise NotFound(f"{kind} {id_or_prefix!r} does not exist (ids are 12 hex characters)")
        rows = self._rows(f"SELECT * FROM {table} WHERE id LIKE ? ORDER BY id LIMIT 3", (id_or_prefix + "%",))
        if not rows:
            raise NotFound(f"{kind} {id_or_prefix!r} does not exist")
        if len(rows) > 1 and rows[0]["id"] != id_or_prefix:
            raise InvalidInput(f"{kind} id prefix {id_or_prefix!r} is ambiguous ({rows[0]['id']}, {rows[1]['id']}, "
                             f"...); give more characters")
        return rows[0]

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
