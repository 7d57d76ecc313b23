"""Sweeps: start a comparison protocol (variants × class splits × seeds), list, read, cancel, resume, follow (SSE)."""
from __future__ import annotations

import asyncio
from typing import Annotated, AsyncIterator, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from models.errors import InvalidInput
from models.sweep import prepare_spec
from server.lifecycle import check_fits
from server.routes.deps import StoreDep
from server.routes.sse import HEADERS, KEEPALIVE_S, sse, subscribed
from server.store import ID_PATTERN
from server.sweeps import SweepManager
from server.sweeps_schemas import (SweepCreate, SweepPublic, SweepsPublic, SweepVariantsPublic, sweep_public,
                                   variants_public)
from server.sweeps_store import SWEEP_ACTIVE

router = APIRouter(prefix="/api/sweeps", tags=["sweeps"])


def get_sweeps(request: Request) -> SweepManager:
    return request.app.state.sweeps


SweepsDep = Annotated[SweepManager, Depends(get_sweeps)]
SweepId = Annotated[str, Path(pattern=ID_PATTERN, description="sweep id (12 hex characters)")]


def _public(sweeps: SweepManager, sweep_id: str) -> SweepPublic:
    rec = sweeps.db.get(sweep_id)
    return sweep_public(rec, sweeps.db.runs(rec.id))


@router.get("/variants", operation_id="sweeps-variants")
def list_variants() -> SweepVariantsPublic:
    return variants_public()


@router.post("", status_code=202, operation_id="sweeps-create",
             responses={400: {"description": "the dataset cannot train a planned run; `detail` says what to change"},
                        422: {"description": "an invalid field; `detail` names it"}})
def create_sweep(body: SweepCreate, store: StoreDep, sweeps: SweepsDep) -> SweepPublic:
    """Checks every first planned run against the dataset before anything is recorded, then starts launching."""
    dataset = store.get_dataset(body.dataset_id)
    try:
        spec = prepare_spec(store.image_set(dataset.id), body.config, **body.spec_fields())
        sweep, first = sweeps.plan(spec)
    except ValueError as e:  # the core refuses what the schema alone cannot see (no baseline, a split too small)
        raise InvalidInput(f"this sweep cannot be planned on {dataset.name}: {e}") from None
    for config in {p.config.model_dump_json(): p.config for p in first}.values():
        check_fits(store, dataset.id, config)
    name = body.name or f"{' vs '.join(body.variants)} on {dataset.name}"
    rec = sweeps.create(dataset.id, name, spec, sweep, first)
    return _public(sweeps, rec.id)


@router.get("", operation_id="sweeps-list")
def list_sweeps(sweeps: SweepsDep, dataset_id: str | None = Query(None, pattern=ID_PATTERN),
                status: Literal["queued", "running", "done", "cancelled", "failed", "interrupted"] | None = None
                ) -> SweepsPublic:
    data = [sweep_public(r, sweeps.db.runs(r.id)) for r in sweeps.db.list(dataset_id=dataset_id, status=status)]
    return SweepsPublic(data=data, count=len(data))


@router.get("/{sweep_id}", operation_id="sweeps-get")
def get_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepPublic:
    return _public(sweeps, sweep_id)


@router.post("/{sweep_id}/cancel", operation_id="sweeps-cancel")
def cancel_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepPublic:
    return _public(sweeps, sweeps.cancel(sweep_id).id)


@router.post("/{sweep_id}/resume", operation_id="sweeps-resume")
def resume_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepPublic:
    return _public(sweeps, sweeps.resume(sweep_id).id)


@router.get("/{sweep_id}/events", operation_id="sweeps-events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `sweep` (the whole sweep, on every change) and a final `end`"}})
async def sweep_events(sweep_id: SweepId, sweeps: SweepsDep) -> StreamingResponse:
    queue, _ = subscribed(sweeps.hub, sweep_id, lambda: sweeps.db.get(sweep_id))  # each nudge re-reads the sweep

    async def stream() -> AsyncIterator[str]:
        try:
            while True:
                sweep = _public(sweeps, sweep_id).model_dump(mode="json")
                yield sse("sweep", sweep)
                if sweep["status"] not in SWEEP_ACTIVE:
                    yield sse("end", sweep)
                    return
                while True:
                    try:
                        await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                        break
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                while not queue.empty():  # several changes at once: send the latest state once
                    queue.get_nowait()
        finally:
            sweeps.hub.unsubscribe(sweep_id, queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=HEADERS)
