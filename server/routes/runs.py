"""Runs: create, retrain from a parent with a config patch, list, cancel, resume, delete, and progress (SSE)."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from models.compat import checked
from models.config import RunConfig
from server import lifecycle
from models.errors import InvalidInput
from server.errors import config_validation_error
from server.executor import resolve_processes
from server.routes.deps import JobsDep, RunId, SettingsDep, StoreDep
from server.routes.sse import follow, subscribed
from server.schemas import RunCreate, RunPublic, RunResume, RunRetrain, RunsPublic, run_public
from server.settings import Settings
from server.store import ID_PATTERN, TERMINAL, RunRecord

router = APIRouter(prefix="/api/runs", tags=["runs"])


def _processes(requested: int | str, config: RunConfig, settings: Settings) -> int:
    return resolve_processes(requested, config.device, config.batch_size, settings)


@router.post("", status_code=201, operation_id="runs-create")
def create_run(body: RunCreate, store: StoreDep, jobs: JobsDep, settings: SettingsDep) -> RunPublic:
    processes = _processes(body.processes, body.config, settings)
    jobs.check_capacity()
    rec = lifecycle.record(store, body.dataset_id, body.config, name=body.name, processes=processes)
    jobs.submit(rec.id)
    return run_public(rec)


@router.post("/{run_id}/retrain", status_code=201, operation_id="runs-retrain",
             responses={422: {"description": "the patched config is invalid; `detail` names the field"}})
def retrain(run_id: RunId, body: RunRetrain, store: StoreDep, jobs: JobsDep, settings: SettingsDep) -> Any:
    parent = store.get_run(run_id)
    try:
        config = checked(parent.run_config().with_patch(body.patch))
    except ValidationError as e:
        return config_validation_error(e, ("body", "patch"))
    processes = _processes(parent.processes if body.processes is None else body.processes, config, settings)
    jobs.check_capacity()
    rec = lifecycle.record(store, parent.dataset_id, config, name=body.name, parent_id=parent.id, processes=processes)
    jobs.submit(rec.id)
    return run_public(rec)


@router.get("", operation_id="runs-list")
def list_runs(store: StoreDep, dataset_id: str | None = Query(None, pattern=ID_PATTERN),
              status: Literal["queued", "running", "done", "failed", "cancelled", "interrupted"] | None = None
              ) -> RunsPublic:
    data = [run_public(r) for r in store.list_runs(dataset_id=dataset_id, status=status)]
    return RunsPublic(data=data, count=len(data))


@router.get("/{run_id}", operation_id="runs-get")
def get_run(run_id: RunId, store: StoreDep) -> RunPublic:
    return run_public(store.get_run(run_id))


@router.post("/{run_id}/cancel", operation_id="runs-cancel")
def cancel_run(run_id: RunId, jobs: JobsDep) -> RunPublic:
    return run_public(jobs.cancel(run_id))


@router.post("/{run_id}/resume", operation_id="runs-resume")
def resume_run(run_id: RunId, store: StoreDep, jobs: JobsDep, settings: SettingsDep,
               body: RunResume | None = None) -> RunPublic:
    """Continue from the last saved epoch; `processes` (default: as before) may differ from the last execution."""
    processes = None
    if body is not None and body.processes is not None:
        rec = store.get_run(run_id)
        if rec.origin != "train" and body.processes != 1:
            raise InvalidInput(f"run {rec.id} measures an imported {rec.origin}; it runs in one process")
        processes = _processes(body.processes, rec.run_config(), settings)
    return run_public(jobs.resume(run_id, processes))


@router.delete("/{run_id}", status_code=204, operation_id="runs-delete")
def delete_run(run_id: RunId, store: StoreDep) -> Response:
    store.delete_run(run_id)
    return Response(status_code=204)


def _run_json(rec: RunRecord) -> dict[str, Any]:
    return run_public(rec).model_dump(mode="json")


@router.get("/{run_id}/events", operation_id="runs-events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `run`, `progress`, and a final `end` (see docs/api.md)"}})
async def run_events(run_id: RunId, store: StoreDep, jobs: JobsDep) -> StreamingResponse:
    queue, rec = subscribed(jobs.hub, run_id, lambda: store.get_run(run_id))
    progress = rec.progress if rec.status == "running" else None
    return follow(jobs.hub, run_id, queue, "run", rec, progress, _run_json, lambda r: r.status in TERMINAL)
