"""Sweep rows in the store's database: the `sweeps` and `sweep_runs` tables (schema: migration v2 in store.py).

A sweep row keeps its spec, the `Sweep` state machine's state (plus the planned runs handed out but not yet
launched), its latest report and its status; `sweep_runs` links each planned-run key to the ordinary run that
executes it, so a sweep's runs are listed with every other run and a run knows nothing about sweeps.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from models.errors import NotFound
from server.store import ACTIVE, TERMINAL, Store, check_id, new_id, now

SWEEP_STATUSES = ("queued", "running", "done", "cancelled", "failed", "interrupted")
SWEEP_ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class SweepRecord:
    id: str
    dataset_id: str
    name: str
    spec: dict[str, Any]  # SweepSpec.to_json()
    state: dict[str, Any] | None  # Sweep.state(): what it handed out and every recorded result
    status: str
    error: str | None
    finished: int  # planned runs with a recorded outcome
    total: int  # planned runs in all (selection and final phase)
    created_at: str
    finished_at: str | None
    report: dict[str, Any] | None  # SweepReport.to_json() plus its "markdown", partial while the sweep runs


@dataclass(frozen=True)
class SweepRun:
    """One launched planned run joined with its run row."""
    key: str
    run_id: str
    plan: dict[str, Any]  # phase, variant, split, seed, grid_index of the PlannedRun
    name: str
    status: str
    error: str | None
    progress: dict[str, Any] | None
    summary: dict[str, Any] | None


def _load(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class SweepStore:
    """Reads and writes sweep rows through the Store's connection and lock (one database, one writer lock)."""

    def __init__(self, store: Store):
        self.store = store

    def _sweep(self, row: sqlite3.Row) -> SweepRecord:
        return SweepRecord(row["id"], row["dataset_id"], row["name"], json.loads(row["spec"]), _load(row["state"]),
                           row["status"], row["error"], row["finished"], row["total"], row["created_at"],
                           row["finished_at"], _load(row["report"]))

    def create(self, dataset_id: str, name: str, spec: dict[str, Any], state: dict[str, Any],
               total: int) -> SweepRecord:
        sweep_id = new_id()
        self.store._exec("INSERT INTO sweeps (id, dataset_id, name, spec, state, status, total, created_at) "
                         "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                         (sweep_id, check_id(dataset_id, "dataset"), name, json.dumps(spec), json.dumps(state),
                          total, now()))
        return self.get(sweep_id)

    def get(self, id_or_prefix: str) -> SweepRecord:
        return self._sweep(self.store._by_prefix("sweeps", "sweep", id_or_prefix))

    def list(self, dataset_id: str | None = None, status: str | None = None) -> list[SweepRecord]:
        where = [(col, v) for col, v in (("dataset_id", dataset_id), ("status", status)) if v is not None]
        sql = "SELECT * FROM sweeps" + "".join(f" {'AND' if i else 'WHERE'} {col} = ?"
                                               for i, (col, _) in enumerate(where))
        rows = self.store._rows(sql + " ORDER BY created_at DESC, rowid DESC", tuple(v for _, v in where))
        return [self._sweep(r) for r in rows]

    def active_ids(self) -> list[str]:
        marks = ",".join("?" * len(SWEEP_ACTIVE))
        return [r[0] for r in self.store._rows(f"SELECT id FROM sweeps WHERE status IN ({marks})", SWEEP_ACTIVE)]

    def save(self, sweep_id: str, state: dict[str, Any], finished: int, total: int,
             report: dict[str, Any] | None) -> None:
        """The state after a record or a launch: what a restart resumes from."""
        self.store._exec("UPDATE sweeps SET state=?, finished=?, total=?, report=? WHERE id=?",
                         (json.dumps(state), finished, total, None if report is None else json.dumps(report),
                          sweep_id))

    def set_status(self, sweep_id: str, status: str, error: str | None = None) -> SweepRecord:
        if status not in SWEEP_STATUSES:
            raise ValueError(f"sweep status {status!r} is not one of {', '.join(SWEEP_STATUSES)}")
        finished_at = None if status in SWEEP_ACTIVE else now()
        if self.store._exec("UPDATE sweeps SET status=?, error=?, finished_at=? WHERE id=?",
                            (status, error, finished_at, sweep_id)) == 0:
            raise NotFound(f"sweep {sweep_id!r} does not exist")
        return self.get(sweep_id)

    def link(self, sweep_id: str, key: str, run_id: str, plan: dict[str, Any]) -> None:
        self.store._exec("INSERT INTO sweep_runs (sweep_id, key, run_id, plan) VALUES (?, ?, ?, ?)",
                         (sweep_id, key, run_id, json.dumps(plan)))

    def runs(self, sweep_id: str) -> list[SweepRun]:
        """The sweep's launched runs in launch order, with their current run status."""
        rows = self.store._rows(
            "SELECT l.key, l.run_id, l.plan, r.name, r.status, r.error, r.progress, r.summary "
            "FROM sweep_runs l JOIN runs r ON r.id = l.run_id WHERE l.sweep_id = ? ORDER BY l.rowid", (sweep_id,))
        return [SweepRun(r["key"], r["run_id"], json.loads(r["plan"]), r["name"], r["status"],
                         r["error"], _load(r["progress"]), _load(r["summary"])) for r in rows]


def outcome(run: SweepRun) -> tuple[dict[str, Any] | None, str | None] | None:
    """(summary, error) to record for a run that has ended, or None while it is queued or running."""
    if run.status in ACTIVE:
        return None
    if run.status == "done":
        return run.summary, None
    assert run.status in TERMINAL
    return None, f"run {run.run_id} {run.status}" + (f": {run.error}" if run.error else "")
