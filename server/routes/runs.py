"""Runs: create, retrain from a parent with a config patch, list, cancel, resume, delete, and progress (SSE)."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from models.compat import checked
from models.config import RunConfig
from models.errors import InvalidInput
from server.errors import config_validation_error
from server.routes.deps import JobsDep, RunId, StoreDep
from server.schemas import RunCreate, RunPublic, RunRetrain, RunsPublic, run_public
from server.store import ID_PATTERN, TERMINAL, RunRecord, Store
from server.weights import check_weights_choice

router = APIRouter(prefix="/api/runs", tags=["runs"])
KEEPALIVE_S = 15.0


def check_fits(store: Store, dataset_id: str, config: RunConfig) -> None:
    """400 now, not a failed worker later: the dataset must split and batch the way the config asks, and an
    uploaded weights file it chooses must exist and fit its backbone."""
    from models.data import DatasetError, check_trainable

    check_weights_choice(store, config)
    try:
        check_trainable(store.image_set(dataset_id), config)
    except DatasetError as e:
        raise InvalidInput(f"dataset {dataset_id} cannot be trained with this config: {e}") from None


@router.post("", status_code=201, operation_id="runs-create")
def create_run(body: RunCreate, store: StoreDep, jobs: JobsDep) -> RunPublic:
    check_fits(store, body.dataset_id, body.config)
    jobs.check_capacity()
    rec = store.create_run(body.dataset_id, body.config, name=body.name)
    jobs.submit(rec.id)
    return run_public(rec)


@router.post("/{run_id}/retrain", status_code=201, operation_id="runs-retrain",
             responses={422: {"description": "the patched config is invalid; `detail` names the field"}})
def retrain(run_id: RunId, body: RunRetrain, store: StoreDep, jobs: JobsDep) -> Any:
    parent = store.get_run(run_id)
    try:
        config = checked(parent.run_config().with_patch(body.patch))
    except ValidationError as e:
        return config_validation_error(e, ("body", "patch"))
    check_fits(store, parent.dataset_id, config)
    jobs.check_capacity()
    rec = store.create_run(parent.dataset_id, config, name=body.name, parent_id=parent.id)
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
def resume_run(run_id: RunId, jobs: JobsDep) -> RunPublic:
    return run_public(jobs.resume(run_id))


@router.delete("/{run_id}", status_code=204, operation_id="runs-delete")
def delete_run(run_id: RunId, store: StoreDep) -> Response:
    store.delete_run(run_id)
    return Response(status_code=204)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _run_json(rec: RunRecord) -> dict[str, Any]:
    return run_public(rec).model_dump(mode="json")


@router.get("/{run_id}/events", operation_id="runs-events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `run`, `progress`, and a final `end` (see docs/api.md)"}})
async def run_events(run_id: RunId, store: StoreDep, jobs: JobsDep) -> StreamingResponse:
    store.get_run(run_id)  # 404 before the stream starts
    queue = jobs.hub.subscribe(run_id)  # subscribe first, then read the state: no event falls in between
    rec = store.get_run(run_id)

    async def stream() -> AsyncIterator[str]:
        try:
            yield _sse("run", _run_json(rec))
            if rec.status in TERMINAL:
                yield _sse("end", _run_json(rec))
                return
            if rec.progress is not None and rec.status == "running":
                yield _sse("progress", rec.progress)
            while True:
                try:
                    kind, payload = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if kind == "progress":
                    yield _sse("progress", payload)
                    continue
                yield _sse("run", _run_json(payload))
                if payload.status in TERMINAL:
                    yield _sse("end", _run_json(payload))
                    return
        finally:
            jobs.hub.unsubscribe(run_id, queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
