"""Runs grouped by configuration across seeds: the runs of one image set whose configs differ only in `seed`
form a group, and each group's headline numbers are summarised as mean ± spread over its finished runs.

The grouping is done here, not in the browser, so that every client (the leaderboard, scripts) agrees on what
"the same configuration" means: the canonical JSON of the config without `seed`, plus the image set.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from typing import Any, Callable

from fastapi import APIRouter, Query
from pydantic import BaseModel

from server.routes.deps import StoreDep
from server.store import ID_PATTERN, RunRecord

router = APIRouter(prefix="/api", tags=["runs"])


def _split(rec: RunRecord, split: str) -> dict[str, Any]:
    return (rec.summary or {}).get(split) or {}


def _gap(rec: RunRecord) -> float | None:
    train, test = _split(rec, "train").get("map_at_r"), _split(rec, "test").get("map_at_r")
    return train - test if isinstance(train, (int, float)) and isinstance(test, (int, float)) else None


# The leaderboard's number columns (frontend/js/views/leaderboard.js uses the same keys).
METRICS: dict[str, Callable[[RunRecord], Any]] = {
    "map_at_r": lambda r: _split(r, "test").get("map_at_r"),
    "recall_at_1": lambda r: _split(r, "test").get("recall_at_1"),
    "train_map_at_r": lambda r: _split(r, "train").get("map_at_r"),
    "gap": _gap,
    "margin": lambda r: _split(r, "test").get("margin"),
    "pi_ratio": lambda r: _split(r, "test").get("pi_ratio"),
    "relative_density": lambda r: _split(r, "test").get("relative_density"),
}


class Spread(BaseModel):
    mean: float | None
    std: float | None  # sample standard deviation (n − 1); None below two values
    n: int  # finished runs with this number


class RunGroup(BaseModel):
    config_key: str
    dataset_id: str
    config: dict[str, Any]  # the shared configuration, `seed` left out
    seeds: list[int]
    run_ids: list[str]  # every run of the group, newest first
    n: int  # finished runs
    metrics: dict[str, Spread]


class RunGroupsPublic(BaseModel):
    data: list[RunGroup]
    count: int


def config_key(rec: RunRecord) -> str:
    """12 hex characters naming (image set, config without seed): equal exactly for runs that differ only in seed."""
    shared = {k: v for k, v in rec.config.items() if k != "seed"}
    text = json.dumps({"dataset_id": rec.dataset_id, "config": shared}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _spread(values: list[float]) -> Spread:
    return Spread(mean=statistics.fmean(values) if values else None,
                  std=statistics.stdev(values) if len(values) >= 2 else None, n=len(values))


def group_runs(records: list[RunRecord]) -> list[RunGroup]:
    """Groups in the order of their newest run (the store lists newest first)."""
    members: dict[str, list[RunRecord]] = {}
    for rec in records:
        members.setdefault(config_key(rec), []).append(rec)
    groups = []
    for key, recs in members.items():
        done = [r for r in recs if r.status == "done"]
        metrics = {name: _spread([float(v) for r in done if isinstance(v := get(r), (int, float))])
                   for name, get in METRICS.items()}
        groups.append(RunGroup(config_key=key, dataset_id=recs[0].dataset_id,
                               config={k: v for k, v in recs[0].config.items() if k != "seed"},
                               seeds=sorted({int(r.config.get("seed", 0)) for r in recs}),
                               run_ids=[r.id for r in recs], n=len(done), metrics=metrics))
    return groups


@router.get("/run-groups", operation_id="runs-groups", response_model=RunGroupsPublic)
def run_groups(store: StoreDep, dataset_id: str | None = Query(None, pattern=ID_PATTERN)) -> RunGroupsPublic:
    groups = group_runs(store.list_runs(dataset_id=dataset_id))
    return RunGroupsPublic(data=groups, count=len(groups))
