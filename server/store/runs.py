"""The run half of the store: the runs table (records, status, progress, summary, cancel requests) and the
start-up marking of runs a killed server left `running`."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from models.config import RunConfig
from models.errors import Conflict, InvalidInput, NotFound
from server.store.base import StoreBase, check_id, new_id, now, remove_tree

ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled", "interrupted")
STATUSES = ACTIVE + TERMINAL


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
    processes: int  # worker processes that execute it (torchrun when > 1)

    def run_config(self) -> RunConfig:
        return RunConfig.model_validate(self.config)


class RunStore(StoreBase):
    """Runs: records and their lifecycle columns (mixed into `Store`)."""

    def _run(self, row: sqlite3.Row) -> RunRecord:
        def load(col: str) -> Any:
            return None if row[col] is None else json.loads(row[col])

        return RunRecord(row["id"], row["dataset_id"], row["parent_id"], row["name"], json.loads(row["config"]),
                         row["status"], row["error"], row["origin"], bool(row["cancel_requested"]), row["created_at"],
                         row["started_at"], row["finished_at"], load("progress"), load("summary"), row["processes"])

    def create_run(self, dataset_id: str, config: RunConfig, name: str | None = None, parent_id: str | None = None,
                   origin: str = "train", status: str = "queued", processes: int = 1) -> RunRecord:
        """Record a run and create its (empty) folder; the caller then executes or queues it."""
        dataset = self.ready_dataset(check_id(dataset_id, "dataset"))
        if parent_id is not None:
            self.get_run(check_id(parent_id, "run"))
        if status not in STATUSES:
            raise InvalidInput(f"status {status!r} is not one of {', '.join(STATUSES)}")
        run_id = new_id()
        name = name or _default_run_name(config, dataset.name)
        stamp = now()
        self._exec("INSERT INTO runs (id, dataset_id, parent_id, name, config, status, origin, created_at, started_at,"
                   " processes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (run_id, dataset.id, parent_id, name, config.model_dump_json(), status, origin, stamp,
                    stamp if status == "running" else None, processes))
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
            raise InvalidInput(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if status == "running":  # a new execution: its progress events are numbered from 1 again
            sql = ("UPDATE runs SET status=?, error=?, cancel_requested=0, started_at=?, finished_at=NULL, "
                   "progress_log=NULL WHERE id=?")
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

    def set_processes(self, run_id: str, processes: int) -> None:
        self._exec("UPDATE runs SET processes=? WHERE id=?", (processes, run_id))

    def set_config(self, run_id: str, config: RunConfig) -> None:
        """Replace a run's config with what its execution established (a TorchScript module's output size)."""
        self._exec("UPDATE runs SET config=? WHERE id=?", (config.model_dump_json(), run_id))

    def request_cancel(self, run_id: str) -> None:
        self._exec("UPDATE runs SET cancel_requested=1 WHERE id=?", (run_id,))

    def cancel_requested(self, run_id: str) -> bool:
        rows = self._rows("SELECT cancel_requested FROM runs WHERE id=?", (run_id,))
        return bool(rows and rows[0][0])

    def set_progress(self, run_id: str, progress: dict[str, Any], log: list[tuple[int, dict[str, Any]]]) -> None:
        """The latest progress and the recent numbered events (server/lifecycle.py StoreProgress)."""
        self._exec("UPDATE runs SET progress=?, progress_log=? WHERE id=?",
                   (json.dumps(progress), json.dumps(log), run_id))

    def progress_logs(self, also: list[str]) -> list[tuple[str, str, list[tuple[int, dict[str, Any]]]]]:
        """(id, status, numbered recent progress events) of every running run and of the runs `also` names:
        what the job manager polls to stream progress and to see a run leave `running`."""
        marks = ",".join("?" * len(also))
        rows = self._rows(f"SELECT id, status, progress_log FROM runs WHERE status='running' OR id IN ({marks})",
                          tuple(also))
        return [(r[0], r[1], [tuple(e) for e in json.loads(r[2])] if r[2] else []) for r in rows]

    def set_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self._exec("UPDATE runs SET summary=? WHERE id=?", (json.dumps(summary), run_id))

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
        remove_tree(self.run_dir(rec.id))



def _default_run_name(config: RunConfig, dataset_name: str) -> str:
    parts = [config.loss.name, config.distance.name]
    if config.flow.enabled:
        parts.append("flow")
    parts += [r.name for r in config.regularizers]
    return f"{' + '.join(parts)} on {dataset_name}"
